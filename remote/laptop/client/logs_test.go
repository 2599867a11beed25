package client

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tpdev/tp/remote/laptop/control"
)

func readLog(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Each connect keeps the last logs: the newest as daemon.log.1, logKeep of them.
func TestOpenDaemonLogKeepsTheLastOnes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.log")
	for _, run := range []string{"run1\n", "run2\n", "run3\n", "run4\n", "run5\n"} {
		f, err := openDaemonLog(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(run); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for n, want := range []string{"run5\n", "run4\n", "run3\n", "run2\n"} {
		if got := readLog(t, oldLog(path, n)); got != want {
			t.Errorf("%s holds %q, want %q", oldLog(path, n), got, want)
		}
	}
	if _, err := os.Stat(oldLog(path, logKeep+1)); !os.IsNotExist(err) {
		t.Errorf("more than %d old logs are kept: %v", logKeep, err)
	}

	// An empty log (a daemon that wrote nothing) takes no old log's place.
	f, err := openDaemonLog(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = openDaemonLog(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := readLog(t, oldLog(path, 1)); got != "run5\n" {
		t.Errorf("daemon.log.1 holds %q after an empty run, want run5", got)
	}
}

// A running daemon's log stays under its bound, in logKeep older files, and what writes
// to the file itself (stderr: a panic's trace) lands in the current one.
func TestSizeCappedRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.log")
	f, err := openDaemonLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const max = 1000
	w := &sizeCapped{w: f, path: path, max: max, keep: 3}
	line := strings.Repeat("x", 99) + "\n"
	for i := 0; i < 100; i++ {
		if n, err := w.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	for n := 0; n <= 3; n++ {
		fi, err := os.Stat(oldLog(path, n))
		if err != nil {
			t.Fatalf("%s: %v", oldLog(path, n), err)
		}
		if fi.Size() > max {
			t.Errorf("%s is %d bytes, over %d", oldLog(path, n), fi.Size(), max)
		}
		if n > 0 && fi.Size() < max {
			t.Errorf("%s is %d bytes: rotated before %d", oldLog(path, n), fi.Size(), max)
		}
	}
	if _, err := os.Stat(oldLog(path, 4)); !os.IsNotExist(err) {
		t.Errorf("more than 3 old logs are kept: %v", err)
	}

	// The runtime writes a panic to fd 2, past the writer.
	before := readLog(t, path)
	if _, err := f.WriteString("panic: boom\n"); err != nil {
		t.Fatal(err)
	}
	if got := readLog(t, path); got != before+"panic: boom\n" {
		t.Errorf("a write to stderr went elsewhere than the current log: it holds %q", got)
	}
	// Its bytes count: the next write past the bound rotates.
	if _, err := f.WriteString(strings.Repeat("y", max)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if got := readLog(t, path); got != "" {
		t.Errorf("the log past its bound by others' writes was not rotated: %d bytes", len(got))
	}
	if got := readLog(t, oldLog(path, 1)); !strings.Contains(got, "panic: boom\n") || !strings.HasSuffix(got, "after\n") {
		t.Errorf("daemon.log.1 lost the writes: %q", got)
	}
}

// tp connect --foreground keeps its log on the terminal: nothing rotates another's file.
func TestDaemonLogOnlyOfTheDaemon(t *testing.T) {
	shortHome(t)
	path, _ := control.LogPath("default")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("a daemon's\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := daemonLog("default"); ok {
		t.Error("a process whose stderr is not the session's log took it for its own")
	}
}

// The daemon proper: its stderr is the session's log, which it bounds, and a panic after a
// rotation still ends up in daemon.log.
func TestDaemonLogPanicLandsInTheCurrentLog(t *testing.T) {
	if os.Getenv("TP_TEST_DAEMON_LOG") != "" {
		w, path, ok := daemonLog("default")
		if !ok {
			os.Exit(3)
		}
		w.(*sizeCapped).max = 1000
		log := NewLog(w, false, false)
		for i := 0; i < 50; i++ {
			log.Info("filler", "line", strings.Repeat("z", 80))
		}
		if _, err := os.Stat(oldLog(path, 1)); err != nil {
			os.Exit(4)
		}
		panic("boom in the daemon")
	}
	shortHome(t)
	path, err := control.LogPath("default")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := openDaemonLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDaemonLogPanicLandsInTheCurrentLog$")
	cmd.Env = append(os.Environ(), "TP_TEST_DAEMON_LOG=1")
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code == 3 || code == 4 {
		t.Fatalf("the daemon did not bound its log (exit %d)", code)
	}
	if err == nil {
		t.Fatal("the panicking daemon exited 0")
	}
	data := []byte(readLog(t, path))
	if !bytes.Contains(data, []byte("panic: boom in the daemon")) {
		t.Errorf("the panic is not in the current log:\n%s", data)
	}
	if len(data) > 64<<10 {
		t.Errorf("the current log is %d bytes", len(data))
	}
	if got := readLog(t, oldLog(path, 1)); !strings.Contains(got, "msg=filler") {
		t.Errorf("daemon.log.1 holds no log lines: %q", got)
	}
}
