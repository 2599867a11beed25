package release

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// CheckConfig is what Check holds a dist folder to.
type CheckConfig struct {
	Config
	// Image is the reference the release's tp installs (IMAGE:VERSION): every binary must
	// carry it and the image archive must be named by it.
	Image string
	// ImageFiles are the paths every image of the index must hold, built for its
	// architecture (e.g. /tp-cluster, /tp-agent).
	ImageFiles []string
}

// Check verifies a dist folder as a user of the release would meet it, and reports what
// it verified, one line per thing:
//   - SHA256SUMS names every other file, with its sum, and nothing else;
//   - every platform's tp is an executable of its OS and architecture (ELF, Mach-O, PE),
//     statically linked on Linux, stamped with Image; the one for this machine runs
//     `tp version -o json` and reports Version and Image;
//   - every krew archive holds exactly that binary under the plugin's name, and the krew
//     manifest names each archive at URL with its sum;
//   - the image archive is one OCI index, named Image, with one linux image per
//     ImageArchs whose config says that architecture and whose ImageFiles are built for it.
func Check(ctx context.Context, cfg CheckConfig) ([]string, error) {
	var report []string
	sums, err := checkSums(cfg.Dir)
	if err != nil {
		return report, err
	}
	report = append(report, fmt.Sprintf("%s: %d files, every sum matches", SumsFile, len(sums)))
	for _, p := range Platforms {
		line, err := checkBinary(ctx, cfg, p)
		if err != nil {
			return report, err
		}
		report = append(report, line)
	}
	if err := checkKrew(cfg, sums); err != nil {
		return report, err
	}
	report = append(report, fmt.Sprintf("%s: %d platforms, each archive holds its tp as %s and is named with its sum", KrewManifestFile, len(Platforms), "kubectl-tp"))
	line, err := checkImage(cfg)
	if err != nil {
		return report, err
	}
	return append(report, line), nil
}

// checkSums reads SumsFile and holds every other file of dir to it.
func checkSums(dir string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, SumsFile))
	if err != nil {
		return nil, fmt.Errorf("release check: %w", err)
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			return nil, fmt.Errorf("release check: %s: line %q is not sha256sum's format", SumsFile, sc.Text())
		}
		sums[name] = sum
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("release check: %w", err)
	}
	for _, e := range entries {
		if e.Name() == SumsFile {
			continue
		}
		want, ok := sums[e.Name()]
		if !ok {
			return nil, fmt.Errorf("release check: %s is not in %s", e.Name(), SumsFile)
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("release check: %w", err)
		}
		if got := sha256Hex(b); got != want {
			return nil, fmt.Errorf("release check: %s: sha256 %s, %s says %s", e.Name(), got, SumsFile, want)
		}
		delete(sums, e.Name())
	}
	if len(sums) > 0 {
		return nil, fmt.Errorf("release check: %s names files the release lacks: %v", SumsFile, keys(sums))
	}
	// Read again: the caller wants them all.
	for sc := bufio.NewScanner(bytes.NewReader(data)); sc.Scan(); {
		sum, name, _ := strings.Cut(sc.Text(), "  ")
		sums[name] = sum
	}
	return sums, nil
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkBinary holds p's tp to its platform, and runs it where it can.
func checkBinary(ctx context.Context, cfg CheckConfig, p Platform) (string, error) {
	path := filepath.Join(cfg.Dir, p.Binary())
	bin, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("release check: tp for %s: %w", p, err)
	}
	format, err := ObjectPlatform(bin)
	if err != nil {
		return "", fmt.Errorf("release check: %s: %w", p.Binary(), err)
	}
	if format.Platform != p {
		return "", fmt.Errorf("release check: %s is a %s executable, not %s", p.Binary(), format, p)
	}
	if p.OS == "linux" && !format.Static {
		return "", fmt.Errorf("release check: %s is dynamically linked: release binaries are built with CGO_ENABLED=0 so they run on any Linux", p.Binary())
	}
	if cfg.Image != "" && !bytes.Contains(bin, []byte(cfg.Image)) {
		return "", fmt.Errorf("release check: %s does not carry the image %s: build it with make dist's -X buildinfo.Image", p.Binary(), cfg.Image)
	}
	line := fmt.Sprintf("%s: %s executable, stamped %s", p.Binary(), format, cfg.Image)
	if p.OS != runtime.GOOS || p.Arch != runtime.GOARCH {
		return line, nil
	}
	if err := runVersion(ctx, path, cfg); err != nil {
		return "", err
	}
	return line + fmt.Sprintf("; ran `version -o json`: %s, %s", cfg.Version, cfg.Image), nil
}

// runVersion runs tp version -o json with no cluster to reach: it must still print the
// client's part, and exit 0.
func runVersion(ctx context.Context, path string, cfg CheckConfig) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	home, err := os.MkdirTemp("", "tp-dist-check-")
	if err != nil {
		return fmt.Errorf("release check: %w", err)
	}
	defer os.RemoveAll(home)
	cmd := exec.CommandContext(ctx, path, "version", "-o", "json")
	cmd.Env = []string{"HOME=" + home, "TP_HOME=" + home, "KUBECONFIG=" + filepath.Join(home, "no-kubeconfig"), "PATH=/usr/bin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("release check: %s version -o json: %w\n%s", filepath.Base(path), err, stderr.String())
	}
	var v struct {
		Kind   string `json:"kind"`
		Client struct {
			Version, Image, OS, Arch string
		} `json:"client"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("release check: %s version -o json printed no JSON: %w\n%s", filepath.Base(path), err, out)
	}
	if v.Kind != "tp.version" || v.Client.Version != cfg.Version || (cfg.Image != "" && v.Client.Image != cfg.Image) ||
		v.Client.OS != runtime.GOOS || v.Client.Arch != runtime.GOARCH {
		return fmt.Errorf("release check: %s version -o json says %+v; want version %s, image %s, %s/%s", filepath.Base(path), v.Client, cfg.Version, cfg.Image, runtime.GOOS, runtime.GOARCH)
	}
	return nil
}

// Object is what an executable's headers say.
type Object struct {
	Format   string // ELF, Mach-O or PE
	Platform Platform
	Static   bool // ELF: no interpreter (nothing to load at start)
}

func (o Object) String() string {
	s := o.Format + " " + o.Platform.String()
	if o.Format == "ELF" && o.Static {
		s += " static"
	}
	return s
}

// ObjectPlatform reads the OS and architecture an executable is built for from its
// headers.
func ObjectPlatform(bin []byte) (Object, error) {
	r := bytes.NewReader(bin)
	if f, err := elf.NewFile(r); err == nil {
		o := Object{Format: "ELF", Platform: Platform{OS: "linux"}, Static: true}
		switch f.Machine {
		case elf.EM_X86_64:
			o.Platform.Arch = "amd64"
		case elf.EM_AARCH64:
			o.Platform.Arch = "arm64"
		default:
			o.Platform.Arch = f.Machine.String()
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				o.Static = false
			}
		}
		if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
			return o, fmt.Errorf("ELF of type %s is not an executable", f.Type)
		}
		return o, nil
	}
	if f, err := macho.NewFile(r); err == nil {
		o := Object{Format: "Mach-O", Platform: Platform{OS: "darwin"}}
		switch f.Cpu {
		case macho.CpuAmd64:
			o.Platform.Arch = "amd64"
		case macho.CpuArm64:
			o.Platform.Arch = "arm64"
		default:
			o.Platform.Arch = f.Cpu.String()
		}
		if f.Type != macho.TypeExec {
			return o, fmt.Errorf("Mach-O of type %s is not an executable", f.Type)
		}
		return o, nil
	}
	if f, err := pe.NewFile(r); err == nil {
		o := Object{Format: "PE", Platform: Platform{OS: "windows"}}
		switch f.Machine {
		case pe.IMAGE_FILE_MACHINE_AMD64:
			o.Platform.Arch = "amd64"
		case pe.IMAGE_FILE_MACHINE_ARM64:
			o.Platform.Arch = "arm64"
		default:
			o.Platform.Arch = fmt.Sprintf("machine %#x", f.Machine)
		}
		if f.Characteristics&pe.IMAGE_FILE_EXECUTABLE_IMAGE == 0 {
			return o, errors.New("PE file is not an executable image")
		}
		return o, nil
	}
	return Object{}, errors.New("not an executable: neither ELF, Mach-O nor PE")
}

// checkKrew holds every archive to its binary and the krew manifest to the archives.
func checkKrew(cfg CheckConfig, sums map[string]string) error {
	data, err := os.ReadFile(filepath.Join(cfg.Dir, KrewManifestFile))
	if err != nil {
		return fmt.Errorf("release check: %w", err)
	}
	var m plugin
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		return fmt.Errorf("release check: %s: %w", KrewManifestFile, err)
	}
	if m.APIVersion != KrewAPIVersion || m.Kind != "Plugin" || m.Metadata.Name != "tp" || m.Spec.Version != PluginVersion(cfg.Version) {
		return fmt.Errorf("release check: %s is %s %s %q version %s; want %s Plugin \"tp\" version %s", KrewManifestFile,
			m.APIVersion, m.Kind, m.Metadata.Name, m.Spec.Version, KrewAPIVersion, PluginVersion(cfg.Version))
	}
	if len(m.Spec.Platforms) != len(Platforms) {
		return fmt.Errorf("release check: %s has %d platforms, the release %d", KrewManifestFile, len(m.Spec.Platforms), len(Platforms))
	}
	for _, p := range Platforms {
		var entry *pluginPlatform
		for i, pp := range m.Spec.Platforms {
			if pp.Selector.MatchLabels["os"] == p.OS && pp.Selector.MatchLabels["arch"] == p.Arch {
				entry = &m.Spec.Platforms[i]
			}
		}
		if entry == nil {
			return fmt.Errorf("release check: %s has no platform %s", KrewManifestFile, p)
		}
		if want := strings.TrimSuffix(cfg.URL, "/") + "/" + p.Archive(); entry.URI != want || entry.SHA256 != sums[p.Archive()] || entry.Bin != p.PluginBinary() {
			return fmt.Errorf("release check: %s's %s: uri %s sha256 %s bin %s; want %s, %s's sum %s, %s", KrewManifestFile, p,
				entry.URI, entry.SHA256, entry.Bin, want, p.Archive(), sums[p.Archive()], p.PluginBinary())
		}
		archived, err := pluginOf(filepath.Join(cfg.Dir, p.Archive()), p)
		if err != nil {
			return fmt.Errorf("release check: %s: %w", p.Archive(), err)
		}
		bin, err := os.ReadFile(filepath.Join(cfg.Dir, p.Binary()))
		if err != nil {
			return fmt.Errorf("release check: %w", err)
		}
		if !bytes.Equal(archived, bin) {
			return fmt.Errorf("release check: %s's %s is not %s", p.Archive(), p.PluginBinary(), p.Binary())
		}
	}
	return nil
}

// pluginOf is the one file of a krew archive, which must be p's plugin binary, executable.
func pluginOf(path string, p Platform) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if p.OS == "windows" {
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return nil, err
		}
		if len(zr.File) != 1 || zr.File[0].Name != p.PluginBinary() {
			return nil, fmt.Errorf("want exactly %s in it", p.PluginBinary())
		}
		rc, err := zr.File[0].Open()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		return nil, err
	}
	if hdr.Name != p.PluginBinary() || hdr.Mode&0o111 == 0 {
		return nil, fmt.Errorf("its first file is %s mode %o; want %s, executable", hdr.Name, hdr.Mode, p.PluginBinary())
	}
	bin, err := io.ReadAll(tr)
	if err != nil {
		return nil, err
	}
	if _, err := tr.Next(); err != io.EOF {
		return nil, fmt.Errorf("want only %s in it", p.PluginBinary())
	}
	return bin, nil
}
