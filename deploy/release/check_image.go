package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tpdev/tp/deploy/image"
)

// checkImage holds the OCI archive to one index named cfg.Image, with an image per
// ImageArchs whose files are built for it.
func checkImage(cfg CheckConfig) (string, error) {
	blobs, index, err := readLayout(filepath.Join(cfg.Dir, ImageFile))
	if err != nil {
		return "", fmt.Errorf("release check: %s: %w", ImageFile, err)
	}
	var top v1.IndexManifest
	if err := json.Unmarshal(index, &top); err != nil {
		return "", fmt.Errorf("release check: %s: index.json: %w", ImageFile, err)
	}
	if len(top.Manifests) != 1 {
		return "", fmt.Errorf("release check: %s: index.json names %d things; want one image index", ImageFile, len(top.Manifests))
	}
	desc := top.Manifests[0]
	if cfg.Image != "" && desc.Annotations[image.AnnotationContainerdRef] != cfg.Image {
		return "", fmt.Errorf("release check: %s is named %q; want %s", ImageFile, desc.Annotations[image.AnnotationContainerdRef], cfg.Image)
	}
	if tag := cfg.Image[strings.LastIndex(cfg.Image, ":")+1:]; cfg.Image != "" && desc.Annotations[image.AnnotationRefName] != tag {
		return "", fmt.Errorf("release check: %s is tagged %q; want %s", ImageFile, desc.Annotations[image.AnnotationRefName], tag)
	}
	var idx v1.IndexManifest
	if err := blobJSON(blobs, desc.Digest, &idx); err != nil {
		return "", fmt.Errorf("release check: %s: the image index: %w", ImageFile, err)
	}
	found := map[string]bool{}
	for _, m := range idx.Manifests {
		if m.Platform == nil || m.Platform.OS != "linux" {
			return "", fmt.Errorf("release check: %s: image %s is not for linux", ImageFile, m.Digest)
		}
		arch := m.Platform.Architecture
		if found[arch] {
			return "", fmt.Errorf("release check: %s: two images for linux/%s", ImageFile, arch)
		}
		found[arch] = true
		if err := checkArchImage(blobs, m.Digest, arch, cfg.ImageFiles); err != nil {
			return "", fmt.Errorf("release check: %s: linux/%s: %w", ImageFile, arch, err)
		}
	}
	for _, arch := range ImageArchs {
		if !found[arch] {
			return "", fmt.Errorf("release check: %s has no image for linux/%s", ImageFile, arch)
		}
	}
	if len(found) != len(ImageArchs) {
		return "", fmt.Errorf("release check: %s has %d images; the release builds %v", ImageFile, len(found), ImageArchs)
	}
	return fmt.Sprintf("%s: one index %s, linux/%s, each image's %s built for its architecture",
		ImageFile, cfg.Image, strings.Join(ImageArchs, " and linux/"), strings.Join(cfg.ImageFiles, " and ")), nil
}

// checkArchImage holds one image of the index to arch: its config, and each of files in its
// layers a static ELF for linux/arch.
func checkArchImage(blobs map[v1.Hash][]byte, digest v1.Hash, arch string, files []string) error {
	var m v1.Manifest
	if err := blobJSON(blobs, digest, &m); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	var cfg v1.ConfigFile
	if err := blobJSON(blobs, m.Config.Digest, &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if cfg.OS != "linux" || cfg.Architecture != arch {
		return fmt.Errorf("its config says %s/%s", cfg.OS, cfg.Architecture)
	}
	seen := map[string]bool{}
	for _, l := range m.Layers {
		data, ok := blobs[l.Digest]
		if !ok {
			return fmt.Errorf("layer %s is missing", l.Digest)
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		tr := tar.NewReader(zr)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			name := "/" + path.Clean(hdr.Name)
			want := false
			for _, f := range files {
				want = want || f == name
			}
			if !want {
				continue
			}
			bin, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			o, err := ObjectPlatform(bin)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if o.Platform != (Platform{OS: "linux", Arch: arch}) || !o.Static {
				return fmt.Errorf("%s is a %s executable, not a static linux/%s one", name, o, arch)
			}
			seen[name] = true
		}
	}
	for _, f := range files {
		if !seen[f] {
			return fmt.Errorf("no %s in its layers", f)
		}
	}
	return nil
}

// readLayout reads an OCI layout in a tar: its blobs by digest (each checked against its
// digest) and index.json.
func readLayout(file string) (map[v1.Hash][]byte, []byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	blobs := map[v1.Hash][]byte{}
	var index []byte
	layout := false
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, nil, err
		}
		switch name := path.Clean(hdr.Name); {
		case name == "index.json":
			index = data
		case name == "oci-layout":
			layout = true
		case strings.HasPrefix(name, "blobs/sha256/"):
			h := v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(name, "blobs/sha256/")}
			if got := sha256Hex(data); got != h.Hex {
				return nil, nil, fmt.Errorf("blob %s holds bytes of sha256 %s", h, got)
			}
			blobs[h] = data
		}
	}
	if !layout || index == nil {
		return nil, nil, fmt.Errorf("not an OCI layout: oci-layout or index.json is missing")
	}
	return blobs, index, nil
}

func blobJSON(blobs map[v1.Hash][]byte, h v1.Hash, v any) error {
	data, ok := blobs[h]
	if !ok {
		return fmt.Errorf("blob %s is missing", h)
	}
	return json.Unmarshal(data, v)
}
