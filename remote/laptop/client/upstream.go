package client

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/upstream"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
)

// UpstreamProxyEnv is --upstream-proxy's variable: the daemon gets the URL, which may hold
// a password, in its environment rather than on its command line.
const UpstreamProxyEnv = "TP_UPSTREAM_PROXY"

// upstreamFile, in a session's folder, keeps the upstream its daemon chained to (private:
// the URL may hold a password). A shell that exported tp's variables points its proxy
// variables at tp; the next tp connect from that shell finds there what they stood for.
const upstreamFile = "upstream.json"

type savedUpstream struct {
	Listen  string    `json:"listen"`
	HTTP    string    `json:"http,omitempty"`
	HTTPS   string    `json:"https,omitempty"`
	All     string    `json:"all,omitempty"`
	NoProxy string    `json:"noProxy,omitempty"`
	Source  string    `json:"source,omitempty"`
	Session string    `json:"session"`
	Saved   time.Time `json:"saved"`
}

// resolveUpstream is the upstream a connection listening on listen chains to: the
// environment's proxy variables, overridden by --upstream-proxy and --upstream-no-proxy.
// A variable that points at a tp proxy (of a session that ran or runs on that port) stands
// for what that session chained to: tp never chains to itself or to another tp.
func resolveUpstream(cfg ConnectConfig, getenv func(string) string, listen string, log *slog.Logger) (upstream.Settings, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := upstream.FromEnv(getenv)
	if err != nil {
		if cfg.UpstreamProxy == "" {
			return s, remote.Errorf(remote.Usage, "%v (or give --upstream-proxy URL, or --upstream-proxy none)", err)
		}
		log.Info("a proxy variable is not usable; --upstream-proxy replaces it", "err", err)
	}
	saved := savedUpstreams()
	s = notSelf(s, tpPort(tpPorts(listen, liveListens()), saved, listening), saved, log)
	s, err = upstream.WithFlags(s, cfg.UpstreamProxy, cfg.UpstreamNoProxy)
	if err != nil {
		return s, remote.Errorf(remote.Usage, "%v", err)
	}
	return s, nil
}

// tpPorts are the loopback ports where a tp proxy listens or listened: this connection's,
// those of the sessions running now (from live) and, in notSelf, those of every saved one.
func tpPorts(listen string, live []string) map[string]bool {
	ports := map[string]bool{}
	for _, l := range append([]string{listen}, live...) {
		if _, port, err := net.SplitHostPort(l); err == nil && port != "0" {
			ports[port] = true
		}
	}
	return ports
}

// liveListens are the listen addresses of the sessions running now.
func liveListens() []string {
	names, _ := control.Names()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out []string
	for _, n := range names {
		if info, err := control.Status(ctx, n); err == nil {
			out = append(out, info.Listen)
		}
	}
	return out
}

// tpPort says whether a loopback port is tp's: this connection's or a running session's,
// or a saved session's where nothing listens now (its session quit). Something else
// listening on a saved session's old port (ssh -D 1080, a proxy agent) is not tp.
func tpPort(live map[string]bool, saved []savedUpstream, listening func(port string) bool) func(port string) bool {
	return func(port string) bool {
		if live[port] {
			return true
		}
		for _, sv := range saved {
			if _, p, err := net.SplitHostPort(sv.Listen); err == nil && p == port {
				return !listening(port)
			}
		}
		return false
	}
}

// listening says whether something accepts connections on the loopback port.
func listening(port string) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 500*time.Millisecond)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// notSelf replaces proxies that are tp's own: a variable at a tp port stands for the
// newest saved upstream of that port; whatever is left that points at tp is dropped.
func notSelf(s upstream.Settings, isTpPort func(port string) bool, saved []savedUpstream, log *slog.Logger) upstream.Settings {
	isTp := func(u *url.URL) bool { return u != nil && loopbackHost(u.Hostname()) && isTpPort(u.Port()) }
	for _, u := range []*url.URL{s.HTTPS, s.HTTP, s.All} {
		if !isTp(u) {
			continue
		}
		if sv, ok := newestSaved(saved, u.Port()); ok {
			log.Info("the proxy variables point at tp: chaining to what that session chained to", "session", sv.Session, "proxy", u.Redacted(), "upstream", sv.settings().String())
			s = sv.settings()
		} else {
			log.Info("the proxy variables point at tp: no upstream proxy from them (give --upstream-proxy URL for one)", "proxy", u.Redacted())
		}
		break
	}
	// Nothing that points at tp survives, whatever was saved: a loop would make tp accept
	// connections from itself without end.
	kept := upstream.Settings{NoProxy: s.NoProxy, Source: s.Source}
	kept.HTTP, kept.HTTPS, kept.All = s.HTTP, s.HTTPS, s.All
	if isTp(kept.HTTP) {
		kept.HTTP = nil
	}
	if isTp(kept.HTTPS) {
		kept.HTTPS = nil
	}
	if isTp(kept.All) {
		kept.All = nil
	}
	if kept.HTTP == s.HTTP && kept.HTTPS == s.HTTPS && kept.All == s.All {
		return s // unchanged: keeps where each value came from
	}
	return kept
}

// newestSaved is the newest saved upstream of a session that listened on port.
func newestSaved(saved []savedUpstream, port string) (savedUpstream, bool) {
	var best savedUpstream
	found := false
	for _, sv := range saved {
		if _, p, err := net.SplitHostPort(sv.Listen); err == nil && p == port && (!found || sv.Saved.After(best.Saved)) {
			best, found = sv, true
		}
	}
	return best, found
}

func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}

func (sv savedUpstream) settings() upstream.Settings {
	parse := func(v string) *url.URL {
		if v == "" {
			return nil
		}
		u, err := url.Parse(v)
		if err != nil {
			return nil
		}
		return u
	}
	return upstream.Settings{HTTP: parse(sv.HTTP), HTTPS: parse(sv.HTTPS), All: parse(sv.All), NoProxy: sv.NoProxy, Source: sv.Source}
}

// saveUpstream records the upstream of the named session, none included: a shell with
// that session's variables then means no upstream, rather than whatever else it finds.
func saveUpstream(name, listen string, s upstream.Settings) error {
	dir, err := control.Dir(name)
	if err != nil {
		return err
	}
	str := func(u *url.URL) string {
		if u == nil {
			return ""
		}
		return u.String()
	}
	data, _ := json.Marshal(savedUpstream{Listen: listen, HTTP: str(s.HTTP), HTTPS: str(s.HTTPS), All: str(s.All), NoProxy: s.NoProxy, Source: s.Source, Session: name, Saved: time.Now()})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("session folder: %w", err)
	}
	// Private: the URL may hold a password.
	if err := os.WriteFile(filepath.Join(dir, upstreamFile), data, 0o600); err != nil {
		return fmt.Errorf("saving the upstream proxy: %w", err)
	}
	return nil
}

// savedUpstreams are every session's saved upstream.
func savedUpstreams() []savedUpstream {
	names, _ := control.Names()
	var out []savedUpstream
	for _, n := range names {
		dir, err := control.Dir(n)
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, upstreamFile))
		if err != nil {
			continue
		}
		var sv savedUpstream
		if json.Unmarshal(data, &sv) == nil {
			out = append(out, sv)
		}
	}
	return out
}

// plainUpstream chooses, for a plain HTTP request, the upstream proxy it is forwarded to:
// none for a cluster destination or one the upstream settings leave direct, and none for a
// SOCKS upstream (the request's dial goes through it instead).
func plainUpstream(router *localproxy.Router, s upstream.Settings) func(*http.Request) (*url.URL, error) {
	if s.Empty() {
		return nil
	}
	return func(r *http.Request) (*url.URL, error) {
		host := r.URL.Hostname()
		tunnel, err := router.Tunnels(r.Context(), host)
		if err != nil || tunnel {
			return nil, err
		}
		port := 80
		if p, err := strconv.Atoi(r.URL.Port()); err == nil {
			port = p
		}
		u := s.ForHTTP(host, port)
		if u == nil || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, nil
		}
		return u, nil
	}
}
