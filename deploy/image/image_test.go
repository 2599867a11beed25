package image

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestWriteFileMakesALoadableSingleLayerImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(dir, "helper")
	if err := os.WriteFile(extra, []byte("#!helper"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Ref: "localhost/tp/prog:test", Binary: bin, Path: "/usr/bin/prog", Args: []string{"-v"}, User: "65532:65532", Arch: "amd64",
		Extra: []File{{Binary: extra, Path: "/helper"}}}
	out := filepath.Join(dir, "prog.tar")
	if err := WriteFile(spec, out); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatalf("reading the tarball back: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || cf.Config.User != "65532:65532" ||
		len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/usr/bin/prog" || cf.Config.Cmd[0] != "-v" {
		t.Fatalf("config: %+v", cf)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, _ := layers[0].Uncompressed()
	defer rc.Close()
	files := map[string]*tar.Header{}
	var content []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		if h.Name == "usr/bin/prog" {
			content, _ = io.ReadAll(tr)
		}
	}
	if h := files["usr/bin/prog"]; h == nil || h.Mode != 0o755 || !bytes.Equal(content, []byte("#!binary")) {
		t.Fatalf("binary in layer: %+v %q", h, content)
	}
	if files["helper"] == nil || files["helper"].Mode != 0o755 {
		t.Fatalf("extra binary missing: %v", files)
	}
	if files["usr/"] == nil || files["usr/bin/"] == nil || files["tmp/"] == nil {
		t.Fatalf("parent folders or /tmp missing: %v", files)
	}

	// Same binary, same image: a loader can skip what it has.
	_, img2, _ := Build(spec)
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Fatalf("digests differ for the same input: %s vs %s", d1, d2)
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	if _, _, err := Build(Spec{Ref: "Not A Ref", Binary: "/bin/true", Path: "/x"}); err == nil {
		t.Error("bad reference: want an error")
	}
	if _, _, err := Build(Spec{Ref: "localhost/x:y", Binary: "/no/such/file", Path: "/x"}); err == nil {
		t.Error("missing binary: want an error")
	}
}
