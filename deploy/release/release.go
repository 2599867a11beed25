// Package release finishes `make dist`: from the tp binaries the Makefile cross-compiled
// into the dist folder it writes the krew archives (kubectl-tp in a .tar.gz, kubectl-tp.exe
// in a .zip on Windows), the krew plugin manifest (kubectl-tp.yaml) that names them with their
// digests, and SHA256SUMS over every file. Everything it writes is the same bytes for the
// same binaries.
package release

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Platform is one OS and architecture tp is released for.
type Platform struct{ OS, Arch string }

// Platforms are every OS and architecture tp is released for; the Makefile's DIST_PLATFORMS
// must build each (tests/rules_dist_test.go checks `make -n dist`).
var Platforms = []Platform{
	{"linux", "amd64"}, {"linux", "arm64"},
	{"darwin", "amd64"}, {"darwin", "arm64"},
	{"windows", "amd64"}, {"windows", "arm64"},
}

// ImageArchs are the architectures of the cluster image (its OCI index has one manifest
// each); the Makefile's DIST_IMAGE_ARCHS must match.
var ImageArchs = []string{"amd64", "arm64"}

const (
	// SumsFile is the checksum file, in sha256sum's format: `sha256sum -c SHA256SUMS`.
	SumsFile = "SHA256SUMS"
	// KrewManifestFile is the krew plugin manifest: `kubectl krew install --manifest=kubectl-tp.yaml`.
	KrewManifestFile = "kubectl-tp.yaml"
	// ImageFile is the cluster image for every ImageArchs, one OCI archive.
	ImageFile = "tp_image.oci.tar"
)

func (p Platform) String() string { return p.OS + "/" + p.Arch }

func (p Platform) exe() string {
	if p.OS == "windows" {
		return ".exe"
	}
	return ""
}

// Binary is the name of tp's binary for p in the dist folder, e.g. tp_linux_amd64.
func (p Platform) Binary() string { return "tp_" + p.OS + "_" + p.Arch + p.exe() }

// PluginBinary is the binary's name inside the krew archive: kubectl finds plugins by it.
func (p Platform) PluginBinary() string { return "kubectl-tp" + p.exe() }

// Archive is the name of the krew archive for p, e.g. kubectl-tp_linux_amd64.tar.gz.
func (p Platform) Archive() string {
	if p.OS == "windows" {
		return "kubectl-tp_" + p.OS + "_" + p.Arch + ".zip"
	}
	return "kubectl-tp_" + p.OS + "_" + p.Arch + ".tar.gz"
}

// epoch is the time of every archived file: zip cannot say 1970, so both say 1980.
var epoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// Config is what Finish needs.
type Config struct {
	Dir     string // the dist folder, holding every Platforms' Binary
	Version string // the release's version, e.g. v0.3.0 (a git description is made semver)
	// URL is where the archives will be downloaded from: the krew manifest names each
	// archive as URL/ARCHIVE, e.g. https://github.com/tpdev/tp/releases/download/v0.3.0.
	URL string
}

// Finish writes the krew archives, the krew manifest and SHA256SUMS into cfg.Dir.
func Finish(cfg Config) error {
	sums := map[Platform]string{}
	for _, p := range Platforms {
		bin, err := os.ReadFile(filepath.Join(cfg.Dir, p.Binary()))
		if err != nil {
			return fmt.Errorf("release: tp for %s: %w", p, err)
		}
		data, err := archive(p, bin)
		if err != nil {
			return fmt.Errorf("release: archive for %s: %w", p, err)
		}
		if err := os.WriteFile(filepath.Join(cfg.Dir, p.Archive()), data, 0o644); err != nil {
			return fmt.Errorf("release: %w", err)
		}
		sums[p] = sha256Hex(data)
	}
	manifest, err := KrewManifest(cfg.Version, cfg.URL, sums)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, KrewManifestFile), manifest, 0o644); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	return WriteSums(cfg.Dir)
}

// archive is the krew archive of p holding bin as PluginBinary.
func archive(p Platform, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	if p.OS == "windows" {
		zw := zip.NewWriter(&buf)
		h := &zip.FileHeader{Name: p.PluginBinary(), Method: zip.Deflate, Modified: epoch}
		h.SetMode(0o755)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(bin); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	zw := gzip.NewWriter(&buf) // no name, no time in the header
	tw := tar.NewWriter(zw)
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: p.PluginBinary(), Mode: 0o755, Size: int64(len(bin)), ModTime: epoch, Format: tar.FormatUSTAR}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteSums writes SumsFile in dir: the SHA-256 of every other file, by name, in
// sha256sum's format. dir holds files only: what is not summed is not shipped.
func WriteSums(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	var lines []string
	for _, e := range entries {
		if e.Name() == SumsFile {
			continue
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("release: %s in %s is not a file: the release is files only", e.Name(), dir)
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("release: %w", err)
		}
		lines = append(lines, sha256Hex(data)+"  "+e.Name()+"\n")
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	return os.WriteFile(filepath.Join(dir, SumsFile), []byte(strings.Join(lines, "")), 0o644)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

var semver = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// PluginVersion is version as krew accepts it, semver with a v: a tag or a git description
// of one (v1.2.3, v1.2.3-4-gabcdef-dirty) as is, anything else (a bare commit) as a
// pre-release of v0.0.0.
func PluginVersion(version string) string {
	if semver.MatchString(version) {
		return version
	}
	clean := strings.Trim(regexp.MustCompile(`[^0-9A-Za-z-]+`).ReplaceAllString(version, "-"), "-")
	if clean == "" {
		clean = "dev"
	}
	return "v0.0.0-dev." + clean
}
