package release

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tpdev/tp/deploy/image"
)

const (
	testVersion = "v1.2.3"
	testImage   = "ghcr.io/tpdev/tp:v1.2.3"
)

// fakeELF is an ELF64 executable's headers for machine, with an interpreter (a dynamically
// linked one) when dynamic, followed by rest.
func fakeELF(machine uint16, dynamic bool, rest string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0})
	b.Write(make([]byte, 8))
	le := binary.LittleEndian
	phnum := uint16(0)
	if dynamic {
		phnum = 1
	}
	for _, v := range []any{uint16(2), machine, uint32(1), uint64(0x400000), uint64(64), uint64(0), uint32(0),
		uint16(64), uint16(56), phnum, uint16(64), uint16(0), uint16(0)} {
		_ = binary.Write(&b, le, v)
	}
	if dynamic {
		for _, v := range []any{uint32(3), uint32(4), uint64(120), uint64(0), uint64(0), uint64(1), uint64(1), uint64(1)} {
			_ = binary.Write(&b, le, v)
		}
	}
	b.WriteString(rest)
	return b.Bytes()
}

// fakeMachO is a 64-bit Mach-O executable's header for cpu, followed by rest.
func fakeMachO(cpu uint32, rest string) []byte {
	var b bytes.Buffer
	for _, v := range []uint32{0xfeedfacf, cpu, 0, 2, 0, 0, 0, 0} {
		_ = binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString(rest)
	return b.Bytes()
}

// fakePE is a PE executable image's headers for machine, followed by rest.
func fakePE(machine uint16, rest string) []byte {
	b := make([]byte, 0x40)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x40)
	coff := make([]byte, 24)
	copy(coff, "PE\x00\x00")
	binary.LittleEndian.PutUint16(coff[4:], machine)
	binary.LittleEndian.PutUint16(coff[22:], 0x0002) // IMAGE_FILE_EXECUTABLE_IMAGE
	return append(append(b, coff...), rest...)
}

// fakeBinary is p's tp: headers of its format stamped with the image, or, for this
// machine's platform, a program that answers `version -o json` as tp does.
func fakeBinary(t *testing.T, p Platform, version string) []byte {
	t.Helper()
	if p.OS == runtime.GOOS && p.Arch == runtime.GOARCH {
		out := filepath.Join(t.TempDir(), "tp")
		cmd := exec.Command("go", "build", "-o", out, "-ldflags", "-X main.version="+version+" -X main.image="+testImage, "./testdata/fakeversion")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building the fake tp: %v\n%s", err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	stamp := "image " + testImage
	switch p {
	case Platform{"linux", "amd64"}:
		return fakeELF(62, false, stamp)
	case Platform{"linux", "arm64"}:
		return fakeELF(183, false, stamp)
	case Platform{"darwin", "amd64"}:
		return fakeMachO(0x01000007, stamp)
	case Platform{"darwin", "arm64"}:
		return fakeMachO(0x0100000c, stamp)
	case Platform{"windows", "amd64"}:
		return fakePE(0x8664, stamp)
	case Platform{"windows", "arm64"}:
		return fakePE(0xaa64, stamp)
	}
	t.Fatalf("no fake binary for %s", p)
	return nil
}

// writeImage writes the OCI archive with an image per arch, each holding ELFs for binArch.
func writeImage(t *testing.T, dir, ref string, archs map[string]string) {
	t.Helper()
	tmp := t.TempDir()
	var specs []image.Spec
	machine := map[string]uint16{"amd64": 62, "arm64": 183}
	for _, arch := range ImageArchs {
		binArch, ok := archs[arch]
		if !ok {
			continue
		}
		for _, name := range []string{"manager", "agent"} {
			if err := os.WriteFile(filepath.Join(tmp, name+"-"+arch), fakeELF(machine[binArch], false, testImage), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		specs = append(specs, image.Spec{Ref: ref, Binary: filepath.Join(tmp, "manager-"+arch), Path: "/tp-cluster", Arch: arch,
			Extra: []image.File{{Binary: filepath.Join(tmp, "agent-"+arch), Path: "/tp-agent"}}})
	}
	if err := image.WriteOCIArchive(specs, filepath.Join(dir, ImageFile)); err != nil {
		t.Fatal(err)
	}
}

// goodDist is a dist folder that Check passes.
func goodDist(t *testing.T) (string, CheckConfig) {
	t.Helper()
	dir := t.TempDir()
	for _, p := range Platforms {
		if err := os.WriteFile(filepath.Join(dir, p.Binary()), fakeBinary(t, p, testVersion), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeImage(t, dir, testImage, map[string]string{"amd64": "amd64", "arm64": "arm64"})
	cfg := CheckConfig{Config: Config{Dir: dir, Version: testVersion, URL: url}, Image: testImage, ImageFiles: []string{"/tp-cluster", "/tp-agent"}}
	if err := Finish(cfg.Config); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// writeKrew writes the krew manifest of the archives in dir as they are.
func writeKrew(t *testing.T, dir, version string) {
	t.Helper()
	sums := map[Platform]string{}
	for _, p := range Platforms {
		data, err := os.ReadFile(filepath.Join(dir, p.Archive()))
		if err != nil {
			t.Fatal(err)
		}
		sums[p] = sha256Hex(data)
	}
	m, err := KrewManifest(version, url, sums)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KrewManifestFile), m, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckPassesAGoodRelease(t *testing.T) {
	_, cfg := goodDist(t)
	report, err := Check(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Check: %v\n%s", err, strings.Join(report, "\n"))
	}
	all := strings.Join(report, "\n")
	for _, want := range []string{"SHA256SUMS: 14 files", "tp_darwin_arm64: Mach-O darwin/arm64 executable", "tp_windows_arm64.exe: PE windows/arm64",
		"tp_linux_arm64: ELF linux/arm64 static", "ran `version -o json`: v1.2.3", "linux/amd64 and linux/arm64"} {
		if !strings.Contains(all, want) {
			t.Errorf("report lacks %q:\n%s", want, all)
		}
	}
}

// Every way a release can be wrong fails Check, naming the file and what is wrong.
func TestCheckFailsABadRelease(t *testing.T) {
	host := Platform{runtime.GOOS, runtime.GOARCH}
	write := func(t *testing.T, dir, name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name  string
		spoil func(t *testing.T, dir string, cfg *CheckConfig)
		resum bool // the mistake is the build's: SHA256SUMS is written after it
		want  string
	}{
		{"a file changed after its sum", func(t *testing.T, dir string, _ *CheckConfig) {
			write(t, dir, "tp_darwin_amd64", fakeMachO(0x01000007, "other "+testImage))
		}, false, "tp_darwin_amd64: sha256"},
		{"a file not summed", func(t *testing.T, dir string, _ *CheckConfig) { write(t, dir, "notes.txt", []byte("x")) }, false, "notes.txt is not in SHA256SUMS"},
		{"a summed file missing", func(t *testing.T, dir string, _ *CheckConfig) { _ = os.Remove(filepath.Join(dir, KrewManifestFile)) }, false, "names files the release lacks: [kubectl-tp.yaml]"},
		{"a binary for another architecture", func(t *testing.T, dir string, _ *CheckConfig) {
			write(t, dir, "tp_darwin_amd64", fakeMachO(0x0100000c, testImage))
		}, true, "tp_darwin_amd64 is a Mach-O darwin/arm64 executable, not darwin/amd64"},
		{"a Linux binary built for Windows", func(t *testing.T, dir string, _ *CheckConfig) {
			write(t, dir, "tp_linux_arm64", fakePE(0xaa64, testImage))
		}, true, "tp_linux_arm64 is a PE windows/arm64 executable"},
		{"a dynamically linked Linux binary", func(t *testing.T, dir string, _ *CheckConfig) {
			write(t, dir, "tp_linux_arm64", fakeELF(183, true, testImage))
		}, true, "tp_linux_arm64 is dynamically linked"},
		{"not an executable", func(t *testing.T, dir string, _ *CheckConfig) {
			write(t, dir, "tp_windows_amd64.exe", []byte("#!/bin/sh\n"))
		}, true, "neither ELF, Mach-O nor PE"},
		{"a binary without the release's image", func(t *testing.T, dir string, _ *CheckConfig) {
			write(t, dir, "tp_windows_amd64.exe", fakePE(0x8664, "localhost/tp/tp:dev"))
		}, true, "tp_windows_amd64.exe does not carry the image ghcr.io/tpdev/tp:v1.2.3"},
		{"the runnable binary reports another version", func(t *testing.T, dir string, _ *CheckConfig) {
			write(t, dir, host.Binary(), fakeBinary(t, host, "v9.9.9"))
		}, true, "version -o json says"},
		{"an archive holding another binary", func(t *testing.T, dir string, _ *CheckConfig) {
			data, err := archive(Platform{"linux", "arm64"}, fakeELF(183, false, "old "+testImage))
			if err != nil {
				t.Fatal(err)
			}
			write(t, dir, Platform{"linux", "arm64"}.Archive(), data)
			writeKrew(t, dir, testVersion)
		}, true, "kubectl-tp_linux_arm64.tar.gz"},
		{"a krew manifest of another version", func(t *testing.T, dir string, _ *CheckConfig) { writeKrew(t, dir, "v1.2.4") }, true, "version v1.2.4; want"},
		{"an image of one architecture", func(t *testing.T, dir string, _ *CheckConfig) {
			writeImage(t, dir, testImage, map[string]string{"amd64": "amd64"})
		}, true, "tp_image.oci.tar has no image for linux/arm64"},
		{"an arm64 image holding amd64 binaries", func(t *testing.T, dir string, _ *CheckConfig) {
			writeImage(t, dir, testImage, map[string]string{"amd64": "amd64", "arm64": "amd64"})
		}, true, "linux/arm64: /tp-cluster is a ELF linux/amd64 static executable, not a static linux/arm64 one"},
		{"an image missing a file", func(t *testing.T, dir string, cfg *CheckConfig) {
			cfg.ImageFiles = append(cfg.ImageFiles, "/tp-other")
		}, false, "no /tp-other in its layers"},
		{"an image of another name", func(t *testing.T, dir string, _ *CheckConfig) {
			writeImage(t, dir, "ghcr.io/other/tp:v1.2.3", map[string]string{"amd64": "amd64", "arm64": "arm64"})
		}, true, `tp_image.oci.tar is named "ghcr.io/other/tp:v1.2.3"; want ghcr.io/tpdev/tp:v1.2.3`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, cfg := goodDist(t)
			tt.spoil(t, dir, &cfg)
			if tt.resum {
				if err := WriteSums(dir); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Check(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check: %v; want an error with %q", err, tt.want)
			}
		})
	}
}
