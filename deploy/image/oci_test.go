package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// twoArchSpecs are the cluster image's specs for amd64 and arm64 over fake binaries whose
// contents name their architecture.
func twoArchSpecs(t *testing.T) []Spec {
	t.Helper()
	dir := t.TempDir()
	var specs []Spec
	for _, arch := range []string{"amd64", "arm64"} {
		bin := filepath.Join(dir, "manager-"+arch)
		agent := filepath.Join(dir, "agent-"+arch)
		if err := os.WriteFile(bin, []byte("manager for "+arch), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(agent, []byte("agent for "+arch), 0o755); err != nil {
			t.Fatal(err)
		}
		specs = append(specs, Spec{Ref: "ghcr.io/tpdev/tp:v1.2.3", Binary: bin, Path: "/tp-cluster", User: "65532:65532", Arch: arch,
			Extra: []File{{Binary: agent, Path: "/tp-agent"}}})
	}
	return specs
}

// untar reads an archive's regular files by name.
func untar(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			files[h.Name], _ = io.ReadAll(tr)
		}
	}
}

// blob returns the blob desc names, after checking it is there with desc's size and digest.
func blob(t *testing.T, files map[string][]byte, desc v1.Descriptor) []byte {
	t.Helper()
	data, ok := files["blobs/sha256/"+desc.Digest.Hex]
	if !ok || desc.Digest.Algorithm != "sha256" {
		t.Fatalf("blob %s (%s) missing", desc.Digest, desc.MediaType)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != desc.Digest.Hex || int64(len(data)) != desc.Size {
		t.Fatalf("blob %s: %d bytes hashing to %x, want size %d", desc.Digest, len(data), sum, desc.Size)
	}
	return data
}

func TestWriteOCIArchiveHoldsOneIndexOfBothArchitectures(t *testing.T) {
	specs := twoArchSpecs(t)
	out := filepath.Join(t.TempDir(), "tp.oci.tar")
	if err := WriteOCIArchive(specs, out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	files := untar(t, data)
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout: %q", files["oci-layout"])
	}
	var top v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &top); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if top.SchemaVersion != 2 || len(top.Manifests) != 1 || top.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("index.json: want one image index entry, got %s", files["index.json"])
	}
	if a := top.Manifests[0].Annotations; a[AnnotationRefName] != "v1.2.3" || a[AnnotationContainerdRef] != "ghcr.io/tpdev/tp:v1.2.3" {
		t.Fatalf("index.json annotations: %v", a)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(blob(t, files, top.Manifests[0]), &idx); err != nil {
		t.Fatal(err)
	}
	if idx.MediaType != types.OCIImageIndex || len(idx.Manifests) != 2 {
		t.Fatalf("image index: want two manifests, got %+v", idx)
	}
	for i, want := range []string{"amd64", "arm64"} {
		m := idx.Manifests[i]
		if m.MediaType != types.OCIManifestSchema1 || m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != want {
			t.Fatalf("manifest %d: %+v, want linux/%s", i, m, want)
		}
		var man v1.Manifest
		if err := json.Unmarshal(blob(t, files, m), &man); err != nil {
			t.Fatal(err)
		}
		if man.Config.MediaType != types.OCIConfigJSON || len(man.Layers) != 1 || man.Layers[0].MediaType != types.OCILayer {
			t.Fatalf("%s manifest: %+v", want, man)
		}
		var cf v1.ConfigFile
		if err := json.Unmarshal(blob(t, files, man.Config), &cf); err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != want || cf.Config.User != "65532:65532" || cf.Config.Entrypoint[0] != "/tp-cluster" {
			t.Fatalf("%s config: %+v", want, cf)
		}
		zr, err := gzip.NewReader(bytes.NewReader(blob(t, files, man.Layers[0])))
		if err != nil {
			t.Fatal(err)
		}
		layer, _ := io.ReadAll(zr)
		content := untar(t, layer)
		if string(content["tp-cluster"]) != "manager for "+want || string(content["tp-agent"]) != "agent for "+want {
			t.Fatalf("%s layer holds the wrong binaries: %q %q", want, content["tp-cluster"], content["tp-agent"])
		}
		if len(cf.RootFS.DiffIDs) != 1 || cf.RootFS.DiffIDs[0].Hex != hexSum(layer) {
			t.Fatalf("%s config's diff ID %v is not the layer's", want, cf.RootFS.DiffIDs)
		}
	}

	// The same binaries give the same bytes: a release rebuilt is the release.
	again := filepath.Join(t.TempDir(), "again.tar")
	if err := WriteOCIArchive(twoArchSpecsLike(t, specs), again); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(again); !bytes.Equal(b, data) {
		t.Fatal("the same binaries gave another archive")
	}
}

// twoArchSpecsLike copies specs' binaries to new paths: only their contents may count.
func twoArchSpecsLike(t *testing.T, specs []Spec) []Spec {
	dir := t.TempDir()
	var out []Spec
	for i, s := range specs {
		cp := func(src, name string) string {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, b, 0o755); err != nil {
				t.Fatal(err)
			}
			return p
		}
		s.Binary = cp(s.Binary, s.Arch+"-bin")
		s.Extra = []File{{Binary: cp(specs[i].Extra[0].Binary, s.Arch+"-extra"), Path: specs[i].Extra[0].Path}}
		out = append(out, s)
	}
	return out
}

func hexSum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Another reader of OCI layouts (go-containerregistry's, which crane push uses) finds the
// two images through the index.
func TestOCIArchiveReadsBackAsALayout(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tp.oci.tar")
	if err := WriteOCIArchive(twoArchSpecs(t), out); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out)
	dir := t.TempDir()
	for name, b := range untar(t, data) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, _ := l.IndexManifest()
	idx, err := l.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil || cf.Architecture != m.Platform.Architecture {
			t.Fatalf("%s: config %+v, %v", m.Platform.Architecture, cf, err)
		}
		if layers, err := img.Layers(); err != nil || len(layers) != 1 {
			t.Fatalf("%s: layers %v, %v", m.Platform.Architecture, layers, err)
		}
	}
}

func TestIndexRejectsMismatchedSpecs(t *testing.T) {
	specs := twoArchSpecs(t)
	if _, _, err := Index(nil); err == nil {
		t.Error("no specs: want an error")
	}
	dup := []Spec{specs[0], specs[0]}
	if _, _, err := Index(dup); err == nil {
		t.Error("one architecture twice: want an error")
	}
	other := []Spec{specs[0], specs[1]}
	other[1].Ref = "ghcr.io/tpdev/other:v1"
	if _, _, err := Index(other); err == nil {
		t.Error("two references: want an error")
	}
}
