package release

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// fakeDist is a dist folder with a fake tp for every platform and the image archive.
func fakeDist(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range Platforms {
		if err := os.WriteFile(filepath.Join(dir, p.Binary()), []byte("tp for "+p.String()), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, ImageFile), []byte("an OCI archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const url = "https://github.com/tpdev/tp/releases/download/v1.2.3"

func TestFinishWritesTheKrewManifestOfTheArchives(t *testing.T) {
	dir := fakeDist(t)
	if err := Finish(Config{Dir: dir, Version: "v1.2.3", URL: url + "/"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, KrewManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Version          string `json:"version"`
			ShortDescription string `json:"shortDescription"`
			Description      string `json:"description"`
			Homepage         string `json:"homepage"`
			Platforms        []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI    string `json:"uri"`
				SHA256 string `json:"sha256"`
				Bin    string `json:"bin"`
				Files  []struct{ From, To string }
			} `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(raw, &m); err != nil {
		t.Fatalf("kubectl-tp.yaml is not the YAML expected: %v\n%s", err, raw)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" || m.Metadata.Name != "tp" ||
		m.Spec.Version != "v1.2.3" || m.Spec.ShortDescription == "" || m.Spec.Description == "" || m.Spec.Homepage == "" {
		t.Fatalf("kubectl-tp.yaml: %+v", m)
	}
	if len(m.Spec.Platforms) != len(Platforms) {
		t.Fatalf("kubectl-tp.yaml has %d platforms, want %d", len(m.Spec.Platforms), len(Platforms))
	}
	seen := map[Platform]bool{}
	for _, pp := range m.Spec.Platforms {
		p := Platform{OS: pp.Selector.MatchLabels["os"], Arch: pp.Selector.MatchLabels["arch"]}
		if seen[p] || len(pp.Selector.MatchLabels) != 2 {
			t.Fatalf("platform %v twice or with other labels: %v", p, pp.Selector.MatchLabels)
		}
		seen[p] = true
		if pp.URI != url+"/"+p.Archive() {
			t.Errorf("%s: uri %s", p, pp.URI)
		}
		archive, err := os.ReadFile(filepath.Join(dir, p.Archive()))
		if err != nil {
			t.Fatal(err)
		}
		if pp.SHA256 != sha256Hex(archive) {
			t.Errorf("%s: sha256 %s, the archive's is %s", p, pp.SHA256, sha256Hex(archive))
		}
		if pp.Bin != p.PluginBinary() || len(pp.Files) != 1 || pp.Files[0].From != p.PluginBinary() {
			t.Errorf("%s: bin %q files %v", p, pp.Bin, pp.Files)
		}
		name, mode, content := unarchive(t, p, archive)
		if name != p.PluginBinary() || mode&0o111 == 0 || content != "tp for "+p.String() {
			t.Errorf("%s archive holds %s (%v): %q", p, name, mode, content)
		}
	}
	for _, p := range Platforms {
		if !seen[p] {
			t.Errorf("kubectl-tp.yaml has no platform %s", p)
		}
	}
}

// unarchive reads the one file of a krew archive.
func unarchive(t *testing.T, p Platform, data []byte) (string, os.FileMode, string) {
	t.Helper()
	if p.OS == "windows" {
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil || len(zr.File) != 1 {
			t.Fatalf("%s: zip: %v", p, err)
		}
		rc, _ := zr.File[0].Open()
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return zr.File[0].Name, zr.File[0].Mode(), string(b)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: gzip: %v", p, err)
	}
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(tr)
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("%s: more than one file in the archive", p)
	}
	return h.Name, os.FileMode(h.Mode), string(b)
}

func TestFinishSumsEveryFileTheSameEveryTime(t *testing.T) {
	dir := fakeDist(t)
	if err := Finish(Config{Dir: dir, Version: "abc1234", URL: url}); err != nil {
		t.Fatal(err)
	}
	sums, err := os.ReadFile(filepath.Join(dir, SumsFile))
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	want := ""
	for _, e := range entries { // ReadDir sorts by name
		if e.Name() == SumsFile {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		want += sha256Hex(b) + "  " + e.Name() + "\n"
	}
	if string(sums) != want {
		t.Fatalf("SHA256SUMS:\n%s\nwant:\n%s", sums, want)
	}
	for _, name := range []string{KrewManifestFile, ImageFile, Platforms[0].Archive(), Platforms[len(Platforms)-1].Binary()} {
		if !strings.Contains(string(sums), "  "+name+"\n") {
			t.Errorf("SHA256SUMS does not name %s", name)
		}
	}

	// The same binaries, the same release: rebuilding it changes no byte.
	again := fakeDist(t)
	if err := Finish(Config{Dir: again, Version: "abc1234", URL: url}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(again, SumsFile)); !bytes.Equal(b, sums) {
		t.Fatalf("a second run gave other files:\n%s\nvs\n%s", b, sums)
	}
}

func TestFinishNeedsEveryPlatformAndFilesOnly(t *testing.T) {
	dir := fakeDist(t)
	os.Remove(filepath.Join(dir, Platforms[3].Binary()))
	if err := Finish(Config{Dir: dir, Version: "v1.0.0", URL: url}); err == nil || !strings.Contains(err.Error(), Platforms[3].String()) {
		t.Errorf("a platform's tp missing: got %v, want an error naming %s", err, Platforms[3])
	}
	dir = fakeDist(t)
	os.Mkdir(filepath.Join(dir, "layout"), 0o755)
	if err := Finish(Config{Dir: dir, Version: "v1.0.0", URL: url}); err == nil {
		t.Error("a folder in dist: want an error, SHA256SUMS would not cover it")
	}
}

func TestPluginVersionIsSemver(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                  "v1.2.3",
		"v1.2.3-4-gabcdef0-dirty": "v1.2.3-4-gabcdef0-dirty",
		"v0.1.0-rc.1+build.5":     "v0.1.0-rc.1+build.5",
		"34b9bc5":                 "v0.0.0-dev.34b9bc5",
		"0123456-dirty":           "v0.0.0-dev.0123456-dirty",
		"1.2.3":                   "v0.0.0-dev.1-2-3",
		"":                        "v0.0.0-dev.dev",
	} {
		if got := PluginVersion(in); got != want || !semver.MatchString(got) {
			t.Errorf("PluginVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
