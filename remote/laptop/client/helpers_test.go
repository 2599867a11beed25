package client

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// fakeDaemon answers tp status for a session named name, as a connection daemon would.
func fakeDaemon(t *testing.T, name string, info control.Info) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, name, control.API{Info: func() control.Info { return info }}) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := control.Status(t.Context(), name); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the fake daemon never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exitCode is cmd/tp's: 2 for the user's errors.
func exitCode(err error) int {
	if remote.KindOf(err).UserFault() {
		return 2
	}
	return 1
}

// shortHome points TP_HOME at a new folder near the root: Unix socket paths are short.
func shortHome(t *testing.T) {
	t.Helper()
	home, err := os.MkdirTemp("", "tp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	t.Setenv("TP_HOME", home)
}

// noEnv is an empty environment.
func noEnv(string) string { return "" }
