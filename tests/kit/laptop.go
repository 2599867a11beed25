package kit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tpdev/tp/tests/cluster"
)

// LaptopUID is the unprivileged user tp runs as in e2e tests: tp must never need root.
const LaptopUID = 65534

// Laptop runs programs as a developer's laptop would: in a laptop network namespace (which
// reaches the API server and nothing else of the cluster), as an unprivileged user, with
// its own home folder and a copy of the kubeconfig.
type Laptop struct {
	Home       string
	Kubeconfig string
	TP         string            // tp's binary, copied into Home
	Net        cluster.LaptopNet // the namespace everything the laptop runs and dials is in
	env        []string
}

// NewLaptop prepares a laptop user for one test, in the first laptop namespace; its tp
// sessions end with the test.
func NewLaptop(t testing.TB) *Laptop {
	t.Helper()
	return NewLaptopIn(t, cluster.Laptops[0])
}

// NewLaptopIn is NewLaptop in the laptop namespace n: a test with two developers at once
// gives each a namespace of its own (cluster.Laptops), as two laptops share no loopback and
// no ports. Laptops in one namespace are users of one machine.
func NewLaptopIn(t testing.TB, n cluster.LaptopNet) *Laptop {
	t.Helper()
	tpBin := os.Getenv("TP_E2E_TP")
	if tpBin == "" {
		t.Fatal("TP_E2E_TP is not set: run the e2e tests with make e2e, which builds bin/tp")
	}
	// A cluster brought up before this laptop was in cluster.Laptops lacks its namespace
	// (nsenter would say little more than "No such file").
	if _, err := os.Stat(n.Netns); n.Netns == "" || err != nil {
		t.Fatalf("laptop namespace %q is missing: run make cluster-up, which makes every laptop namespace", n.Netns)
	}
	strays.Do(func() { endStrays(t) })
	home, err := os.MkdirTemp("", "tp-laptop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	l := &Laptop{Home: home, Kubeconfig: filepath.Join(home, "kubeconfig"), TP: filepath.Join(home, "tp"), Net: n}
	copyFile(t, KubeconfigPath(), l.Kubeconfig, 0o600)
	copyFile(t, tpBin, l.TP, 0o755)
	if err := filepath.Walk(home, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, LaptopUID, LaptopUID)
	}); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(home, 0o755)
	l.env = []string{
		"HOME=" + home, "KUBECONFIG=" + l.Kubeconfig, "TP_HOME=" + filepath.Join(home, ".tp"),
		"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C",
	}
	t.Cleanup(func() {
		l.quitAll(t)
		if t.Failed() {
			l.printDaemonLogs(t)
			PrintClusterLogs(t)
		}
	})
	return l
}

// printDaemonLogs prints the end of every session's daemon log, for a failed test: the
// laptop's home, and the logs with it, are gone once the test ends.
func (l *Laptop) printDaemonLogs(t testing.TB) {
	logs, _ := filepath.Glob(filepath.Join(l.Home, ".tp", "sessions", "*", "daemon.log"))
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if len(b) > 16<<10 {
			b = b[len(b)-16<<10:]
		}
		t.Logf("the end of %s:\n%s", path, b)
	}
}

// DaemonLog is the default session's daemon log so far.
func (l *Laptop) DaemonLog(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Home, ".tp", "sessions", "default", "daemon.log"))
	if err != nil {
		t.Fatalf("daemon log: %v", err)
	}
	return string(b)
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("laptop: %v", err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatalf("laptop: %v", err)
	}
}

// Copy puts a binary into the laptop user's home and returns its path there.
func (l *Laptop) Copy(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(l.Home, filepath.Base(src))
	copyFile(t, src, dst, 0o755)
	if err := os.Chown(dst, LaptopUID, LaptopUID); err != nil {
		t.Fatal(err)
	}
	return dst
}

// Command is name args… run on the laptop: in its namespace, as its user, with its env.
func (l *Laptop) Command(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	return l.commandAs(ctx, LaptopUID, env, name, args...)
}

// commandAs is Command as uid (its group too): another user of the laptop unless uid is
// LaptopUID.
func (l *Laptop) commandAs(ctx context.Context, uid int, env []string, name string, args ...string) *exec.Cmd {
	full := []string{"--net=" + l.Net.Netns, "--",
		"setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--",
		"env", "-i"}
	full = append(full, l.env...)
	full = append(full, env...)
	full = append(full, name)
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Result is what a finished command printed.
type Result struct {
	Stdout, Stderr string
	Err            error
	Code           int
	State          *os.ProcessState
}

// Run runs a command on the laptop and waits for it (at most timeout).
func (l *Laptop) Run(timeout time.Duration, env []string, name string, args ...string) Result {
	return l.run(LaptopUID, timeout, "", env, name, args...)
}

// RunAs is Run as uid: another user of the developer's machine, who must not get the
// developer's cluster rights through tp's ports.
func (l *Laptop) RunAs(uid int, timeout time.Duration, env []string, name string, args ...string) Result {
	return l.run(uid, timeout, "", env, name, args...)
}

// RunStdin is Run with stdin.
func (l *Laptop) RunStdin(timeout time.Duration, stdin string, name string, args ...string) Result {
	return l.run(LaptopUID, timeout, stdin, nil, name, args...)
}

func (l *Laptop) run(uid int, timeout time.Duration, stdin string, env []string, name string, args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := l.commandAs(ctx, uid, env, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Err: err, Code: code, State: cmd.ProcessState}
}

// TPRun runs tp with args on the laptop.
func (l *Laptop) TPRun(timeout time.Duration, args ...string) Result {
	return l.Run(timeout, nil, l.TP, args...)
}

// MustTP runs tp and fails the test unless it succeeds.
func (l *Laptop) MustTP(t testing.TB, timeout time.Duration, args ...string) Result {
	t.Helper()
	r := l.TPRun(timeout, args...)
	if r.Err != nil {
		t.Fatalf("tp %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
	}
	return r
}

// Curl runs curl on the laptop; args come after a few defaults (silent, errors shown, a
// timeout, output and status printed).
func (l *Laptop) Curl(timeout time.Duration, args ...string) Result {
	base := []string{"-sS", "--max-time", fmt.Sprint(int(timeout.Seconds()))}
	return l.Run(timeout+5*time.Second, nil, "curl", append(base, args...)...)
}

// Dial dials from the laptop's network namespace as the laptop's user (LaptopUID), as the
// developer's programs would: tp's ports refuse other users of the machine.
func (l *Laptop) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return l.DialAs(ctx, LaptopUID, network, address)
}

// DialAs dials from the laptop's network namespace with a socket that belongs to uid: another
// user of the developer's machine when uid is not LaptopUID.
func (l *Laptop) DialAs(ctx context.Context, uid int, network, address string) (net.Conn, error) {
	return cluster.DialInNetnsAs(ctx, l.Net.Netns, uid, network, address)
}

// Listen listens on address (tcp) in the laptop's network namespace, where the developer's
// own servers run.
func (l *Laptop) Listen(address string) (net.Listener, error) {
	return cluster.ListenInNetns(l.Net.Netns, address)
}

// HTTPClient is an HTTP client on the laptop that uses proxy (nil: none).
func (l *Laptop) HTTPClient(proxy *url.URL, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:         l.Dial,
		MaxIdleConnsPerHost: 100,
		DisableCompression:  true,
	}
	if proxy != nil {
		tr.Proxy = http.ProxyURL(proxy)
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// quitAll ends every tp session the laptop left running.
func (l *Laptop) quitAll(t testing.TB) {
	r := l.TPRun(30*time.Second, "quit", "--all")
	if r.Err != nil {
		t.Logf("tp quit --all: %v %s", r.Err, r.Stderr)
	}
}

// strays makes endStrays run once per test binary: later laptops are this run's own.
var strays sync.Once

// endStrays ends tp processes that an earlier test or demo left on the laptop (their
// binaries live in the laptop homes under the temp folder), so that their ports are free.
func endStrays(t testing.TB) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		dir := filepath.Dir(exe)
		base := filepath.Base(dir)
		if filepath.Dir(dir) == filepath.Clean(os.TempDir()) && filepath.Base(exe) == "tp" &&
			(strings.HasPrefix(base, "tp-laptop-") || strings.HasPrefix(base, "tp-demo-")) {
			t.Logf("ending a tp left running by an earlier test or demo: pid %d (%s)", pid, exe)
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}
