//go:build e2e

package e2e

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/remote/laptop/output/schema"
	"github.com/tpdev/tp/tests/kit"
)

// validator holds documents to the published schemas, objects closed: a field tp prints
// that its schema does not document fails.
var validator = sync.OnceValues(func() (*schema.Validator, error) { return schema.New(true) })

// matchesSchema fails t unless out, a command's -o json or yaml, is a document of kind that
// matches its schema.
func matchesSchema(t *testing.T, kind, out string) {
	t.Helper()
	v, err := validator()
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Validate([]byte(out))
	if err != nil || got != kind {
		t.Errorf("%s: %v (kind %q)\n%s", kind, err, got, out)
	}
}

// laptopKubectl is the cluster's own kubectl, copied where the laptop's user may run it.
func laptopKubectl(t *testing.T, l *kit.Laptop) string {
	t.Helper()
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
	return l.Copy(t, strings.TrimSpace(string(path)))
}

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
		matchesSchema(t, output.KindVersion, out)
		matchesSchema(t, output.KindVersion, l.MustTP(t, time.Minute, "version", "-o", "yaml").Stdout)
	})

	t.Run("ManifestIsAKubernetesList", func(t *testing.T) {
		matchesSchema(t, schema.ManifestKind, l.MustTP(t, time.Minute, "install", "--dry-run", "-o", "json").Stdout)
	})

	t.Run("KubectlPlugin", func(t *testing.T) {
		kubectl := laptopKubectl(t, l)
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

	t.Run("GatherLogs", func(t *testing.T) {
		// Secrets the archive must not hold: the upstream proxy's password (a dead one, so
		// that errors name it) and the proxy's own credentials.
		const upstreamSecret, proxySecret = "upStreamS3cret", "pr0xyS3cret"
		ns := namespace(t, clientset(t), "tp-e2e-cli")
		env := []string{"TP_PROXY_CREDENTIALS=alice:" + proxySecret}
		api, err := url.Parse(restConfig(t, laptopDial).Host)
		if err != nil {
			t.Fatal(err)
		}
		r := l.Run(time.Minute, env, l.TP, "connect", "--namespace", ns, "--upstream-proxy", "http://bob:"+upstreamSecret+"@127.0.0.1:9",
			"--upstream-no-proxy", api.Hostname(), "--print-env=false")
		if r.Err != nil {
			t.Fatalf("tp connect: %v\n%s", r.Err, r.Stderr)
		}
		_ = l.Run(40*time.Second, nil, "curl", "-sS", "--max-time", "20", "-x", "http://alice:"+proxySecret+"@127.0.0.1:1080", "http://example.test/")
		archive := filepath.Join(l.Home, "logs.tar.gz")
		l.MustTP(t, 2*time.Minute, "gather-logs", "-o", archive)
		files := readTarGz(t, archive)
		var names []string
		managerLog := false
		for name, body := range files {
			names = append(names, name)
			if strings.Contains(name, "/manager/tp-system/") && strings.HasSuffix(name, ".log") && strings.Contains(body, "traffic manager serving") {
				managerLog = true
			}
			for _, secret := range []string{upstreamSecret, proxySecret} {
				if strings.Contains(body, secret) || strings.Contains(name, secret) {
					t.Errorf("the archive's %s holds a secret (%s)", name, secret)
				}
			}
		}
		if !managerLog {
			t.Errorf("no manager log in the archive: %q", names)
		}
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, "/sessions/default/daemon.log") }) ||
			!slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, "/sessions/default/status.json") }) {
			t.Errorf("no session log or status in the archive: %q", names)
		}
		if body := files[firstWithSuffix(names, "/sessions/default/daemon.log")]; !strings.Contains(body, "upstream") {
			t.Errorf("the session's log in the archive says nothing of the upstream (the redaction test proves nothing):\n%s", body)
		}
	})
}

func firstWithSuffix(names []string, suffix string) string {
	for _, n := range names {
		if strings.HasSuffix(n, suffix) {
			return n
		}
	}
	return ""
}

// readTarGz is every regular file of a .tar.gz: name to content.
func readTarGz(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = string(b)
	}
}

// TestCLIProject is a team's tp.yaml: tp intercept with no flags does what the project file
// says, -o json tells the result, and tp gather-logs then holds the intercepted workload's
// agent log.
func TestCLIProject(t *testing.T) {
	cs := clientset(t)
	ns := namespace(t, cs, "tp-e2e-project")
	w := deployWorkload(t, cs, ns, "web-app")
	l := kit.NewLaptop(t)
	l.MustTP(t, 3*time.Minute, "install")
	local := laptopServer(t, "laptop")

	root := filepath.Join(l.Home, "project")
	src := filepath.Join(root, "src", "svc")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "version: 1\nnamespace: " + ns + "\nintercepts:\n  web:\n    workload: deploy/web-app\n    ports: [\"" + local + ":80\"]\n"
	if err := os.WriteFile(filepath.Join(root, "tp.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("chown", "-R", "65534:65534", root).Run(); err != nil {
		t.Fatal(err)
	}
	inProject := func(timeout time.Duration, args ...string) kit.Result {
		return l.Run(timeout, nil, "sh", append([]string{"-c", `cd "$0" && exec "$@"`, src, l.TP}, args...)...)
	}

	r := inProject(3*time.Minute, "intercept", "-o", "json")
	if r.Err != nil {
		t.Fatalf("tp intercept -o json in the project: %v\n%s\n%s", r.Err, r.Stdout, r.Stderr)
	}
	var in output.Intercept
	if err := json.Unmarshal([]byte(r.Stdout), &in); err != nil {
		t.Fatalf("tp intercept -o json: %v\n%s", err, r.Stdout)
	}
	if in.Header.Version != 1 || in.Kind != "tp.intercept" || in.Workload != (output.WorkloadRef{Namespace: ns, Kind: "Deployment", Name: "web-app"}) ||
		len(in.Ports) != 1 || in.Ports[0].Local != "127.0.0.1:"+local || in.Ports[0].ServicePort != 80 || in.Ports[0].Agents < 1 {
		t.Errorf("tp intercept -o json: %+v", in)
	}
	// TestIntercept holds tp intercept to the first request; this test is about the project
	// file, so it allows kube-proxy its lag.
	answersWithin(t, 30*time.Second, "the project's intercept", w.ClusterIP, "/project", "laptop /project\n")
	if out := inProject(time.Minute, "config", "view").Stdout; !strings.Contains(out, ns) || !strings.Contains(out, filepath.Join(root, "tp.yaml")) {
		t.Errorf("tp config view in the project:\n%s", out)
	}

	archive := filepath.Join(l.Home, "logs.tar.gz")
	l.MustTP(t, 2*time.Minute, "gather-logs", "-o", archive)
	files := readTarGz(t, archive)
	agentLog := false
	for name := range files {
		if strings.Contains(name, "/agents/"+ns+"/") && strings.HasSuffix(name, "/tp-agent.log") {
			agentLog = true
		}
	}
	if !agentLog {
		var names []string
		for n := range files {
			names = append(names, n)
		}
		t.Errorf("no agent log of the intercepted workload in the archive: %q", names)
	}
	l.MustTP(t, time.Minute, "leave", in.Name)
}
