package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations of the OCI layout's index.json entry: the tag (OCI's own, which skopeo's
// oci-archive:FILE:TAG and oras's --from-oci-layout DIR:TAG select by) and the full
// reference (containerd's, which `ctr images import` names the image by).
const (
	AnnotationRefName       = "org.opencontainers.image.ref.name"
	AnnotationContainerdRef = "io.containerd.image.name"
)

// Index makes one image index of the same image built for several architectures: specs
// share Ref and differ in Arch (and the binaries built for it). Each image has OCI media
// types and its platform (linux/ARCH) in the index.
func Index(specs []Spec) (name.Reference, v1.ImageIndex, error) {
	if len(specs) == 0 {
		return nil, nil, fmt.Errorf("image index: no images")
	}
	var ref name.Reference
	seen := map[string]bool{}
	idx := v1.ImageIndex(empty.Index)
	for _, spec := range specs {
		if spec.Ref != specs[0].Ref {
			return nil, nil, fmt.Errorf("image index: every image has one reference; %q and %q differ", specs[0].Ref, spec.Ref)
		}
		if spec.Arch == "" || seen[spec.Arch] {
			return nil, nil, fmt.Errorf("image index: each image needs an architecture of its own; %q is empty or repeated", spec.Arch)
		}
		seen[spec.Arch] = true
		r, img, err := build(spec, true)
		if err != nil {
			return nil, nil, fmt.Errorf("image for %s: %w", spec.Arch, err)
		}
		ref = r
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: "linux", Architecture: spec.Arch},
		}})
	}
	return ref, idx, nil
}

// WriteOCIArchive writes the index of specs (see Index) as an OCI image layout in a tar at
// out, the form `skopeo copy --all oci-archive:OUT docker://REF` pushes: index.json names
// the image index by its tag and reference, and blobs/sha256/ holds the index, each
// image's manifest and config, and the layers. The same binaries give the same bytes.
func WriteOCIArchive(specs []Spec, out string) error {
	ref, idx, err := Index(specs)
	if err != nil {
		return err
	}
	blobs, err := indexBlobs(idx)
	if err != nil {
		return err
	}
	top, err := topIndex(ref, idx)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	write := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	if err := write("index.json", top); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
	}
	digests := make([]v1.Hash, 0, len(blobs))
	for h := range blobs {
		digests = append(digests, h)
	}
	sort.Slice(digests, func(i, j int) bool { return digests[i].String() < digests[j].String() })
	for _, h := range digests {
		if err := write("blobs/"+h.Algorithm+"/"+h.Hex, blobs[h]); err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("oci archive %s: %w", out, err)
	}
	return os.Rename(tmp, out)
}

// topIndex is the layout's index.json: one entry, the image index, named by its tag and
// its full reference.
func topIndex(ref name.Reference, idx v1.ImageIndex) ([]byte, error) {
	desc, err := descriptorOf(idx)
	if err != nil {
		return nil, err
	}
	desc.Annotations = map[string]string{AnnotationContainerdRef: ref.Name(), AnnotationRefName: ref.Identifier()}
	return json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{desc}})
}

func descriptorOf(idx v1.ImageIndex) (v1.Descriptor, error) {
	raw, err := idx.RawManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("image index: %w", err)
	}
	d, err := idx.Digest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("image index: %w", err)
	}
	return v1.Descriptor{MediaType: types.OCIImageIndex, Digest: d, Size: int64(len(raw))}, nil
}

// indexBlobs are the blobs of idx by digest: its manifest, and each image's manifest,
// config and layers (compressed, as a registry stores them).
func indexBlobs(idx v1.ImageIndex) (map[v1.Hash][]byte, error) {
	blobs := map[v1.Hash][]byte{}
	raw, err := idx.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	d, err := idx.Digest()
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	blobs[d] = raw
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			return nil, fmt.Errorf("image index: %w", err)
		}
		if err := imageBlobs(img, blobs); err != nil {
			return nil, err
		}
	}
	return blobs, nil
}

func imageBlobs(img v1.Image, blobs map[v1.Hash][]byte) error {
	raw, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("image manifest: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image manifest: %w", err)
	}
	blobs[d] = raw
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	cd, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	blobs[cd] = cfg
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("image layers: %w", err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return fmt.Errorf("image layer: %w", err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("image layer: %w", err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("image layer: %w", err)
		}
		blobs[ld] = data
	}
	return nil
}
