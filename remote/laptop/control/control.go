// Package control is how `tp status`, `tp quit` and a second `tp connect` talk to a running
// connection daemon: HTTP over a Unix socket in the session's folder, readable by its user
// only. Unix sockets exist on Linux, macOS and Windows 10+.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/laptop/session"
)

// Info is what a daemon reports about itself; Session holds the tunnel's status and Proxy
// and DNS the front ends' counters, as JSON objects of their packages' own shapes.
type Info struct {
	Name             string    `json:"name"`
	PID              int       `json:"pid"`
	Version          string    `json:"version"`
	Context          string    `json:"context"`
	Cluster          string    `json:"cluster"`
	Namespace        string    `json:"namespace"`
	ManagerNamespace string    `json:"managerNamespace"`
	Listen           string    `json:"listen"`
	DNSListen        string    `json:"dnsListen,omitempty"`
	ProxyAuth        bool      `json:"proxyAuth,omitempty"` // the proxy asks clients for credentials (never given here)
	Started          time.Time `json:"started"`
	// LogPath is the daemon's log (empty for a connection in the foreground).
	LogPath string `json:"logPath,omitempty"`
	// Goroutines is the daemon's count, to tell a leak.
	Goroutines int             `json:"goroutines"`
	Session    json.RawMessage `json:"session,omitempty"`
	Proxy      json.RawMessage `json:"proxy,omitempty"`
	DNS        json.RawMessage `json:"dns,omitempty"`
	// Upstream is the proxy that destinations outside the cluster go through; nil: none,
	// they are dialed directly.
	Upstream *Upstream `json:"upstream,omitempty"`
	// AlsoProxy are tp connect --also-proxy's ranges, which go through the tunnel as the
	// cluster's own do.
	AlsoProxy []string `json:"alsoProxy,omitempty"`
	// NoProxy is the user's NO_PROXY list the connection started with (before tp's own
	// entries), which tp's exported variables keep.
	NoProxy string `json:"noProxy,omitempty"`
}

// Upstream describes an upstream proxy, passwords redacted.
type Upstream struct {
	HTTP    string `json:"http,omitempty"`  // for port 80
	HTTPS   string `json:"https,omitempty"` // for every other port
	All     string `json:"all,omitempty"`   // where neither is set
	NoProxy string `json:"noProxy,omitempty"`
	Source  string `json:"source,omitempty"` // where tp found it
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

// API is what a daemon does for its commands.
type API struct {
	Info      func() Info
	Quit      func()
	Intercept func(ctx context.Context, spec session.InterceptSpec) (session.Held, error)
	Leave     func(name string) error
	List      func(ctx context.Context, namespace string) (Intercepts, error)
}

// Intercepts is what GET /intercepts tells: this daemon's intercepts, and the manager's
// view of all of them (every client's).
type Intercepts struct {
	Held []session.InterceptSpec `json:"held"`
	All  []InterceptInfo         `json:"all"`
}

// InterceptInfo is one intercept as the manager tells of it. The JSON names are those the
// socket has always answered with (they were the wire protocol's), so that clients of
// either version read each other.
type InterceptInfo struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Workload  string `json:"workload,omitempty"`
	Port      string `json:"port,omitempty"`
	Client    string `json:"client,omitempty"`
	SinceUnix int64  `json:"since_unix,omitempty"`
	Agents    int32  `json:"agents,omitempty"`
	// Holder is the Kubernetes user the grant names, Grant the grant (Lease) itself.
	Holder string `json:"holder,omitempty"`
	Grant  string `json:"grant,omitempty"`
	// Problem is what keeps the intercept from the workload's traffic, as the manager
	// last found it; empty when all is well.
	Problem string `json:"problem,omitempty"`
	// HTTP is the intercept's filter; nil for one that takes every connection.
	HTTP    *route.Filter `json:"http,omitempty"`
	Wiretap bool          `json:"wiretap,omitempty"`
}

// Serve answers the daemon's API on the named session's socket until ctx ends: GET
// /status, POST /quit, POST /intercepts, DELETE /intercepts/NAME, GET /intercepts. A stale
// socket from a dead daemon is replaced; a live one is an error (the session already runs).
func Serve(ctx context.Context, name string, api API) error {
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
	// Profiles of a live daemon, for a bug report (curl --unix-socket SOCKET http://tp/debug/pprof/heap); the
	// socket is its owner's alone.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, api.Info())
	})
	mux.HandleFunc("POST /quit", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		// Answered before the daemon starts to end, which closes this connection.
		http.NewResponseController(w).Flush()
		go api.Quit()
	})
	mux.HandleFunc("POST /intercepts", func(w http.ResponseWriter, r *http.Request) {
		var spec session.InterceptSpec
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&spec); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		held, err := api.Intercept(r.Context(), spec)
		if err != nil {
			writeJSON(w, http.StatusConflict, apiError{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, held)
	})
	mux.HandleFunc("DELETE /intercepts/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := api.Leave(r.PathValue("name")); err != nil {
			writeJSON(w, http.StatusNotFound, apiError{err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /intercepts", func(w http.ResponseWriter, r *http.Request) {
		list, err := api.List(r.Context(), r.URL.Query().Get("namespace"))
		if err != nil {
			writeJSON(w, http.StatusBadGateway, apiError{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, list)
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

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// call sends one request to the named session's daemon and decodes its JSON answer into
// out (when not nil); an answer that is not 2xx is an error carrying the daemon's text.
func call(ctx context.Context, name, method, path string, in, out any) error {
	c, err := client(name)
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, _ := http.NewRequestWithContext(ctx, method, "http://tp"+path, body)
	c.Timeout = 30 * time.Second
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("session %q: %w", name, ErrNotRunning)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e apiError
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return errors.New(e.Error)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Intercept asks the named session's daemon to hold an intercept.
func Intercept(ctx context.Context, name string, spec session.InterceptSpec) (session.Held, error) {
	var out session.Held
	err := call(ctx, name, http.MethodPost, "/intercepts", spec, &out)
	return out, err
}

// Leave ends an intercept the named session's daemon holds.
func Leave(ctx context.Context, name, intercept string) error {
	return call(ctx, name, http.MethodDelete, "/intercepts/"+url.PathEscape(intercept), nil, nil)
}

// ListIntercepts asks the named session's daemon for the intercepts in namespace.
func ListIntercepts(ctx context.Context, name, namespace string) (Intercepts, error) {
	var out Intercepts
	err := call(ctx, name, http.MethodGet, "/intercepts?namespace="+url.QueryEscape(namespace), nil, &out)
	return out, err
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
	// The daemon may close the connection as it ends, before its answer arrives: what
	// counts is that its process goes.
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !Alive(info.PID) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("session %q did not end within %s", name, timeout)
}
