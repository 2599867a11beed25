// Package image turns one static binary into a single-layer OCI image tarball, without a
// Docker daemon or a registry, for `ctr images import`, `kind load image-archive`,
// `docker load` or `k3d image import`; and the same image for several architectures into
// one OCI archive (an image index), the release's form, for `skopeo copy`, `crane push` or
// `oras cp` to a registry (oci.go).
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec describes an image made of one binary.
type Spec struct {
	Ref    string   // image reference, e.g. localhost/tp/workload:test
	Binary string   // path of the static binary on disk
	Path   string   // where it lands in the image, e.g. /workload
	Args   []string // default arguments (the image's Cmd)
	User   string   // e.g. "65532:65532"; empty means root
	Arch   string   // GOARCH of the binary, e.g. amd64
	// Extra are more binaries in the same layer (a container picks one with its command).
	Extra []File
}

// File is one more binary of an image: Binary on disk lands at Path.
type File struct{ Binary, Path string }

// epoch is the fixed time of every file and of the image, so the same binary gives the same
// digest and a loader can tell it already has the image.
var epoch = time.Unix(0, 0).UTC()

// Build makes the image described by spec, with Docker's media types (what every loader of
// a docker-save tarball reads).
func Build(spec Spec) (name.Reference, v1.Image, error) {
	return build(spec, false)
}

// build makes the image described by spec; oci picks OCI media types for the manifest, the
// config and the layer, as an OCI image index wants.
func build(spec Spec, oci bool) (name.Reference, v1.Image, error) {
	ref, err := name.ParseReference(spec.Ref)
	if err != nil {
		return nil, nil, fmt.Errorf("image reference %q: %w", spec.Ref, err)
	}
	var files []layerFile
	for _, f := range append([]File{{Binary: spec.Binary, Path: spec.Path}}, spec.Extra...) {
		data, err := os.ReadFile(f.Binary)
		if err != nil {
			return nil, nil, fmt.Errorf("image binary: %w", err)
		}
		files = append(files, layerFile{path: f.Path, data: data})
	}
	layerTar, err := layerOf(files)
	if err != nil {
		return nil, nil, err
	}
	base, layerOpts := empty.Image, []tarball.LayerOption(nil)
	if oci {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		layerOpts = append(layerOpts, tarball.WithMediaType(types.OCILayer))
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, layerOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("image layer: %w", err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, nil, fmt.Errorf("image layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = spec.Arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{spec.Path}
	cf.Config.Cmd = spec.Args
	cf.Config.User = spec.User
	cf.Config.Env = []string{"PATH=/"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, nil, fmt.Errorf("image config: %w", err)
	}
	return ref, img, nil
}

// WriteFile builds the image and writes it as a tarball (docker-save layout, which every
// loader above reads) to out.
func WriteFile(spec Spec, out string) error {
	ref, img, err := Build(spec)
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return fmt.Errorf("image tarball %s: %w", out, err)
	}
	return os.Rename(tmp, out)
}

type layerFile struct {
	path string
	data []byte
}

// layerOf is a tar holding the binaries at their paths, their parent folders and an empty /tmp.
func layerOf(files []layerFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{"tmp/": true}
	for _, f := range files {
		for d := path.Dir(path.Clean("/" + f.path)); d != "/"; d = path.Dir(d) {
			dirs[d[1:]+"/"] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted) // parents before children, and the same bytes every time
	for _, d := range sorted {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: epoch}); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
	}
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Clean(f.path)[1:], Mode: 0o755, Size: int64(len(f.data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	return buf.Bytes(), nil
}
