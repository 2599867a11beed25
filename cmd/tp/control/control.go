// Package control is how `tp status`, `tp quit` and a second `tp connect` talk to a running
// connection daemon: HTTP over a Unix socket in the session's folder, readable by its user
// only. Unix sockets exist on Linux, macOS and Windows 10+.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Info is what a daemon reports about itself; Session holds the tunnel's status and Proxy
// and DNS the front ends' counters, as JSON objects of their packages' own shapes.
type Info struct {
	Name             string          `json:"name"`
	PID              int             `json:"pid"`
	Version          string          `json:"version"`
	Context          string          `json:"context"`
	Cluster          string          `json:"cluster"`
	Namespace        string          `json:"namespace"`
	ManagerNamespace string          `json:"managerNamespace"`
	Listen           string          `json:"listen"`
	DNSListen        string          `json:"dnsListen,omitempty"`
	Started          time.Time       `json:"started"`
	Session          json.RawMessage `json:"session,omitempty"`
	Proxy            json.RawMessage `json:"proxy,omitempty"`
	DNS              json.RawMessage `json:"dns,omitempty"`
}

// Dir is the folder of the named session: $TP_HOME/sessions/NAME, else under the user's
// cache folder.
func Dir(name string) (string, error) {
	base := os.Getenv("TP_HOME")
	if base == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("session folder: %w (set TP_HOME)", err)
		}
		base = filepath.Join(cache, "tp")
	}
	return filepath.Join(base, "sessions", name), nil
}

// SocketPath is the control socket of the named session.
func SocketPath(name string) (string, error) {
	dir, err := Dir(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "control.sock"), nil
}

// LogPath is the daemon's log.
func LogPath(name string) (string, error) {
	dir, err := Dir(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "daemon.log"), nil
}

// Names lists the sessions that have a folder (running or not).
func Names() ([]string, error) {
	dir, err := Dir("x")
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Dir(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Serve answers GET /status with info() and POST /quit by calling quit, on the named
// session's socket, until ctx ends. A stale socket from a dead daemon is replaced; a live
// one is an error (the session is already running).
func Serve(ctx context.Context, name string, info func() Info, quit func()) error {
	path, err := SocketPath(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if _, err := Status(ctx, name); err == nil {
		return fmt.Errorf("session %q is already running (tp status)", name)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	_ = os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(info())
	})
	mux.HandleFunc("POST /quit", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		go quit()
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
		_ = os.Remove(path)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control socket: %w", err)
	}
	return nil
}

func client(name string) (*http.Client, error) {
	path, err := SocketPath(name)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}, nil
}

// ErrNotRunning says no daemon answers for a session.
var ErrNotRunning = errors.New("not running")

// Status asks the named session's daemon for its Info.
func Status(ctx context.Context, name string) (Info, error) {
	c, err := client(name)
	if err != nil {
		return Info{}, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://tp/status", nil)
	resp, err := c.Do(req)
	if err != nil {
		return Info{}, fmt.Errorf("session %q: %w", name, ErrNotRunning)
	}
	defer resp.Body.Close()
	var info Info
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return Info{}, fmt.Errorf("session %q status: %w", name, err)
	}
	return info, nil
}

// Quit asks the named session's daemon to end and waits (up to timeout) until its process
// is gone.
func Quit(ctx context.Context, name string, timeout time.Duration) error {
	c, err := client(name)
	if err != nil {
		return err
	}
	info, err := Status(ctx, name)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://tp/quit", strings.NewReader(""))
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("session %q: %w", name, ErrNotRunning)
	}
	resp.Body.Close()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(info.PID) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("session %q did not end within %s", name, timeout)
}
