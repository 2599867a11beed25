package pac

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
)

// harness evaluates a PAC file in node with the standard PAC functions.
//
//go:embed testdata/pac_harness.js
var harness string

// Eval evaluates pacText's FindProxyForURL for each URL with node (the path or name of a
// Node.js binary; "" means "node" on PATH) and the standard PAC functions, and returns
// each URL's answer, e.g. "PROXY 127.0.0.1:1080; SOCKS5 127.0.0.1:1080" or "DIRECT". The
// host passed is the URL's, without port or IPv6 brackets, as Chrome passes it.
//
// It is for tests, tp's end-to-end tests among them: it fails when the PAC does not
// evaluate, when FindProxyForURL returns something other than a string, when the PAC calls
// alert, and when it resolves a name (dnsResolve, isResolvable, isInNet on a name, ...),
// which would block a browser; tp's PAC files do none of these.
func Eval(ctx context.Context, node string, pacText []byte, urls []string) (map[string]string, error) {
	cases := make([]evalCase, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("url %q: %w", s, err)
		}
		if u.Hostname() == "" {
			return nil, fmt.Errorf("url %q has no host", s)
		}
		cases[i] = evalCase{URL: s, Host: u.Hostname()}
	}
	results, err := eval(ctx, node, pacText, cases, false)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(urls))
	for i, s := range urls {
		out[s] = results[i]
	}
	return out, nil
}

// evalCase is one call of FindProxyForURL(url, host).
type evalCase struct {
	URL  string `json:"url"`
	Host string `json:"host"`
}

// eval runs the cases in order; noIsInNetEx evaluates as Firefox would, without the
// Microsoft IPv6 functions.
func eval(ctx context.Context, node string, pacText []byte, cases []evalCase, noIsInNetEx bool) ([]string, error) {
	if node == "" {
		node = "node"
	}
	req, err := json.Marshal(struct {
		PAC         string     `json:"pac"`
		Tests       []evalCase `json:"tests"`
		NoIsInNetEx bool       `json:"noIsInNetEx"`
	}{string(pacText), cases, noIsInNetEx})
	if err != nil {
		return nil, fmt.Errorf("encoding the evaluation request: %w", err)
	}
	// The script goes in -e, leaving stdin for the request.
	cmd := exec.CommandContext(ctx, node, "-e", harness)
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("evaluating the PAC file with %s: %w: %s", node, err, strings.TrimSpace(stderr.String()))
	}
	var resp struct {
		Results  []string
		Resolved []string
		Alerts   []string
	}
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("reading the PAC evaluation %q: %w", stdout.Bytes(), err)
	}
	if len(resp.Resolved) > 0 {
		return nil, fmt.Errorf("the PAC file resolves %q, which blocks a browser", resp.Resolved)
	}
	if len(resp.Alerts) > 0 {
		return nil, fmt.Errorf("the PAC file calls alert(%q)", resp.Alerts)
	}
	if len(resp.Results) != len(cases) {
		return nil, fmt.Errorf("the PAC evaluation gave %d answers for %d URLs", len(resp.Results), len(cases))
	}
	return resp.Results, nil
}
