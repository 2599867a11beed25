package client

import (
	"encoding/json"
	"errors"
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
	Listen  string `json:"listen"`
	HTTP    string `json:"http,omitempty"`
	HTTPS   string `json:"https,omitempty"`
	All     string `json:"all,omitempty"`
	NoProxy string `json:"noProxy,omitempty"`
	Source  string `json:"source,omitempty"`
	Session string `json:"session"`
}

// resolveUpstream is the upstream a connection listening on listen chains to: the
// environment's proxy variables, overridden by --upstream-proxy and --upstream-no-proxy.
// A variable that points at a tp proxy (this one, or a session's that saved what it chained
// to) stands for that session's upstream, or for none: tp never chains to itself.
func resolveUpstream(cfg ConnectConfig, getenv func(string) string, listen string, log *slog.Logger) (upstream.Settings, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := upstream.FromEnv(getenv)
	if err != nil {
		return s, remote.Errorf(remote.Usage, "%v (or give --upstream-proxy URL, or --upstream-proxy none)", err)
	}
	s = notSelf(s, listen, savedUpstreams(), log)
	s, err = upstream.WithFlags(s, cfg.UpstreamProxy, cfg.UpstreamNoProxy)
	if err != nil {
		return s, remote.Errorf(remote.Usage, "--upstream-proxy: %v", err)
	}
	return s, nil
}

// notSelf replaces proxies that are tp's own: with what the saved session they belong to
// chained to, else with none.
func notSelf(s upstream.Settings, listen string, saved []savedUpstream, log *slog.Logger) upstream.Settings {
	_, ownPort, _ := net.SplitHostPort(listen)
	for _, u := range []*url.URL{s.HTTP, s.HTTPS, s.All} {
		if u == nil || !loopbackHost(u.Hostname()) {
			continue
		}
		for _, sv := range saved {
			if _, port, _ := net.SplitHostPort(sv.Listen); port == u.Port() {
				log.Info("the proxy variables point at tp: chaining to what that session chained to", "session", sv.Session, "proxy", u.Redacted())
				return sv.settings()
			}
		}
		if u.Port() == ownPort {
			log.Info("the proxy variables point at tp itself: no upstream proxy (give --upstream-proxy URL for one)", "proxy", u.Redacted())
			return upstream.Settings{}
		}
	}
	return s
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

// saveUpstream records (or, with none, forgets) the upstream of the named session.
func saveUpstream(name, listen string, s upstream.Settings) error {
	dir, err := control.Dir(name)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, upstreamFile)
	if s.Empty() {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("forgetting the upstream proxy: %w", err)
		}
		return nil
	}
	str := func(u *url.URL) string {
		if u == nil {
			return ""
		}
		return u.String()
	}
	data, _ := json.Marshal(savedUpstream{Listen: listen, HTTP: str(s.HTTP), HTTPS: str(s.HTTPS), All: str(s.All), NoProxy: s.NoProxy, Source: s.Source, Session: name})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("session folder: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
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
