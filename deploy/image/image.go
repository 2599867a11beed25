// Package image turns one static binary into a single-layer OCI image tarball, without a
// Docker daemon or a registry, for `ctr images import`, `kind load image-archive`,
// `docker load` or `k3d image import`.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Spec describes an image made of one binary.
type Spec struct {
	Ref    string   // image reference, e.g. localhost/tp/workload:test
	Binary string   // path of the static binary on disk
	Path   string   // where it lands in the image, e.g. /workload
	Args   []string // default arguments (the image's Cmd)
	User   string   // e.g. "65532:65532"; empty means root
	Arch   string   // GOARCH of the binary, e.g. amd64
}

// epoch is the fixed time of every file and of the image, so the same binary gives the same
// digest and a loader can tell it already has the image.
var epoch = time.Unix(0, 0).UTC()

// Build makes the image described by spec.
func Build(spec Spec) (name.Reference, v1.Image, error) {
	ref, err := name.ParseReference(spec.Ref)
	if err != nil {
		return nil, nil, fmt.Errorf("image reference %q: %w", spec.Ref, err)
	}
	bin, err := os.ReadFile(spec.Binary)
	if err != nil {
		return nil, nil, fmt.Errorf("image binary: %w", err)
	}
	layerTar, err := layerOf(spec.Path, bin)
	if err != nil {
		return nil, nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("image layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
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

// layerOf is a tar holding the binary at p, its parent folders and an empty /tmp.
func layerOf(p string, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []string{"tmp/"}
	for d := path.Dir(path.Clean("/" + p)); d != "/"; d = path.Dir(d) {
		dirs = append(dirs, d[1:]+"/")
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		mode := int64(0o755)
		if dirs[i] == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dirs[i], Mode: mode, ModTime: epoch}); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Clean(p)[1:], Mode: 0o755, Size: int64(len(bin)), ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	return buf.Bytes(), nil
}
