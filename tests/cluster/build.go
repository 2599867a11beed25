package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"time"

	"github.com/tpdev/tp/deploy/image"
)

// binaries are the built programs the cluster runs.
type binaries struct {
	dir         string // kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl
	version     string // Kubernetes version, e.g. v1.33.13
	corednsTar  string // CoreDNS image tarball
	corednsRef  string
	corednsVers string
	kubeRouter  string // the NetworkPolicy controller
}

func (b binaries) path(name string) string { return filepath.Join(b.dir, name) }

var k8sCommands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// build returns the cluster's binaries, building them into the cache when the cache does not
// hold this version yet. A warm cache costs a hash of the build modules' files.
func (c *Cluster) build(ctx context.Context) (binaries, error) {
	k8sMod, k8sVer, k8sDir, err := c.buildModule("k8s", "k8s.io/kubernetes")
	if err != nil {
		return binaries{}, err
	}
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitTreeState=clean", k8sVer)
	pkgs := make([]string, len(k8sCommands))
	for i, cmd := range k8sCommands {
		pkgs[i] = "k8s.io/kubernetes/cmd/" + cmd
	}
	if err := c.goBuild(ctx, "kubernetes "+k8sVer, k8sMod, k8sDir, nil, ldflags, pkgs...); err != nil {
		return binaries{}, err
	}

	dnsMod, dnsVer, dnsDir, err := c.buildModule("coredns", "github.com/coredns/coredns")
	if err != nil {
		return binaries{}, err
	}
	// Static: it runs in an image with nothing but itself.
	if err := c.goBuild(ctx, "coredns "+dnsVer, dnsMod, dnsDir, []string{"CGO_ENABLED=0"}, "-s -w", "."); err != nil {
		return binaries{}, err
	}
	ref := "localhost/tp/coredns:" + dnsVer
	tar := filepath.Join(dnsDir, "coredns.tar")
	if _, err := os.Stat(tar); err != nil {
		spec := image.Spec{Ref: ref, Binary: filepath.Join(dnsDir, "bin", "tpcorednsbuild"), Path: "/coredns", Arch: runtime.GOARCH}
		if err := image.WriteFile(spec, tar); err != nil {
			return binaries{}, fmt.Errorf("coredns image: %w", err)
		}
	}

	krMod, krVer, krDir, err := c.buildModule("kube-router", "github.com/cloudnativelabs/kube-router/v2")
	if err != nil {
		return binaries{}, err
	}
	if err := c.goBuild(ctx, "kube-router "+krVer, krMod, krDir, nil, "-s -w", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"); err != nil {
		return binaries{}, err
	}
	return binaries{dir: filepath.Join(k8sDir, "bin"), version: k8sVer, corednsTar: tar, corednsRef: ref, corednsVers: dnsVer,
		kubeRouter: filepath.Join(krDir, "bin", "kube-router")}, nil
}

// buildModule is the build module tests/cluster/build/name, the version of path it pins, and
// its folder in the cache: keyed by that version and the module's files.
func (c *Cluster) buildModule(name, path string) (mod, version, dir string, err error) {
	mod = filepath.Join(c.cfg.Repo, "tests", "cluster", "build", name)
	if version, err = requiredVersion(mod, path); err != nil {
		return "", "", "", err
	}
	key, err := moduleKey(mod)
	if err != nil {
		return "", "", "", err
	}
	return mod, version, filepath.Join(c.cfg.Cache, name, version+"-"+key), nil
}

// goBuild builds pkgs of the module in mod into dest/bin, unless dest/bin is there already.
// It builds into a temporary folder and renames it, so an interrupted build never looks done.
func (c *Cluster) goBuild(ctx context.Context, what, mod, dest string, env []string, ldflags string, pkgs ...string) error {
	bin := filepath.Join(dest, "bin")
	if _, err := os.Stat(bin); err == nil {
		return nil
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("build %s: %w", what, err)
	}
	tmp, err := os.MkdirTemp(dest, "bin-")
	if err != nil {
		return fmt.Errorf("build %s: %w", what, err)
	}
	defer os.RemoveAll(tmp)
	logPath := filepath.Join(c.LogDir(), "build-"+filepath.Base(mod)+".log")
	if err := os.MkdirAll(c.LogDir(), 0o755); err != nil {
		return fmt.Errorf("build %s: %w", what, err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("build %s: %w", what, err)
	}
	defer logFile.Close()
	c.logf("building %s into %s (several minutes the first time; cached after)", what, dest)
	start := time.Now()
	args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", tmp + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = mod
	cmd.Env = append(append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly"), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", what, err, tail(logPath, 30))
	}
	if err := os.Rename(tmp, bin); err != nil {
		return fmt.Errorf("build %s: %w", what, err)
	}
	c.logf("built %s in %s", what, time.Since(start).Round(time.Second))
	return nil
}

// requiredVersion reads the version of module path that the build module mod requires.
func requiredVersion(mod, path string) (string, error) {
	data, err := os.ReadFile(filepath.Join(mod, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("build module: %w", err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(path) + `\s+(v\S+)`).FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("build module %s: no version of %s in go.mod", mod, path)
	}
	return string(m[1]), nil
}

// moduleKey is a short hash of a build module's files, so that editing one (a new plugin,
// another replace) builds anew even at the same version.
func moduleKey(mod string) (string, error) {
	entries, err := os.ReadDir(mod)
	if err != nil {
		return "", fmt.Errorf("build module: %w", err)
	}
	h := sha256.New()
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(mod, e.Name()))
		if err != nil {
			return "", fmt.Errorf("build module: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", e.Name(), len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s\n---", len(lines), path, bytes.Join(lines, []byte("\n")))
}
