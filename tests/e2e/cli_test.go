//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/tests/kit"
)

// TestCLI is tp as a kubectl user meets it: tp version names the manager in the cluster,
// and tp works as a real kubectl's plugin, saying "kubectl tp" in its help.
func TestCLI(t *testing.T) {
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")

	t.Run("VersionNamesTheManager", func(t *testing.T) {
		var v output.Version
		out := l.MustTP(t, time.Minute, "version", "-o", "json").Stdout
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("tp version -o json: %v\n%s", err, out)
		}
		if v.Header.Version != 1 || v.Kind != "tp.version" {
			t.Errorf("header %+v", v.Header)
		}
		want := os.Getenv("TP_E2E_MANAGER_IMAGE")
		if v.Client.Image != want || v.Manager.Image != want || !v.Manager.Ready || v.Manager.Namespace != "tp-system" || v.Manager.Skew != "" || v.Manager.Error != "" {
			t.Errorf("tp version -o json: client %+v manager %+v; want both at %s, ready, no skew", v.Client, v.Manager, want)
		}
		if v.Manager.Version == "" || !strings.HasSuffix(want, ":"+v.Manager.Version) {
			t.Errorf("manager version %q, want the tag of %s", v.Manager.Version, want)
		}
		text := l.MustTP(t, time.Minute, "version").Stdout
		if !strings.Contains(text, "manager: "+v.Manager.Version+" in tp-system (image "+want+", ready)") {
			t.Errorf("tp version:\n%s", text)
		}
	})

	t.Run("KubectlPlugin", func(t *testing.T) {
		bin := os.Getenv("TP_E2E_TPCLUSTER")
		if bin == "" {
			t.Fatal("TP_E2E_TPCLUSTER is not set: make e2e sets it to bin/tpcluster, which knows the cluster's own kubectl")
		}
		repo, err := filepath.Abs("../..")
		if err != nil {
			t.Fatal(err)
		}
		path, err := exec.Command(bin, "--repo", repo, "kubectl-path").Output()
		if err != nil {
			t.Fatalf("tpcluster kubectl-path: %v", err)
		}
		kubectl := l.Copy(t, strings.TrimSpace(string(path)))
		plugins := filepath.Join(l.Home, "plugins")
		if err := os.Mkdir(plugins, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(l.TP, filepath.Join(plugins, "kubectl-tp")); err != nil {
			t.Fatal(err)
		}
		env := []string{"PATH=" + plugins + ":/usr/local/bin:/usr/bin:/bin"}
		r := l.Run(time.Minute, env, kubectl, "tp", "version")
		if r.Err != nil || !strings.Contains(r.Stdout, "manager: ") || !strings.Contains(r.Stdout, "ready") {
			t.Errorf("kubectl tp version: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
		}
		r = l.Run(time.Minute, env, kubectl, "tp", "--help")
		if r.Err != nil || !strings.Contains(r.Stdout, "kubectl tp") {
			t.Errorf("kubectl tp --help does not say kubectl tp: %v\n%s", r.Err, r.Stdout)
		}
		r = l.Run(time.Minute, env, kubectl, "tp", "leave", "nothing-here")
		if r.Err == nil || !strings.Contains(r.Stderr, "kubectl tp ") {
			t.Errorf("kubectl tp leave of nothing: want an error with a kubectl tp hint: %v\n%s", r.Err, r.Stderr)
		}
	})
}
