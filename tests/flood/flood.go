// Package flood is a hostile client of the traffic manager's agent API for the e2e suites:
// it registers as an agent many times a second with tokens no agent has (garbage,
// well-formed JWTs with forged signatures, a few of them over and over and many distinct
// ones), so a test can check that real agents and intercepts are served meanwhile and
// that the manager spends (almost) no TokenReviews on it.
package flood

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Config is one flood.
type Config struct {
	Target    string        // host:port of the manager's agent API
	N         int           // registrations to send
	Duration  time.Duration // spread over this long
	Conns     int           // gRPC connections to spread them over
	Workers   int           // calls in flight at most
	TLS       bool          // dial with TLS (not verifying the manager: this is no agent)
	Namespace string        // the namespace the forged tokens and hellos claim
	Audience  string        // the audience the well-formed forgeries claim
}

// Result is what the manager answered.
type Result struct {
	Sent       int            `json:"sent"`
	ElapsedMS  int64          `json:"elapsed_ms"`
	Codes      map[string]int `json:"codes"`      // the answers, by classify
	Registered int            `json:"registered"` // calls the manager took for an agent's
	Kinds      map[string]int `json:"kinds"`      // tokens sent, by kind
	FirstError string         `json:"first_error,omitempty"`
}

// Agents floods cfg.Target with cfg.N agent registrations, evenly over cfg.Duration.
func Agents(ctx context.Context, cfg Config) (Result, error) {
	cfg = withDefaults(cfg)
	creds := insecure.NewCredentials()
	if cfg.TLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a hostile client checks nothing
	}
	var ccs []*grpc.ClientConn
	defer func() {
		for _, cc := range ccs {
			cc.Close()
		}
	}()
	for range cfg.Conns {
		cc, err := grpc.NewClient("passthrough:///"+cfg.Target, grpc.WithTransportCredentials(creds))
		if err != nil {
			return Result{}, fmt.Errorf("flood: dial %s: %w", cfg.Target, err)
		}
		ccs = append(ccs, cc)
	}
	tokens := newForger(cfg)
	res := Result{Codes: map[string]int{}, Kinds: map[string]int{}}
	var mu sync.Mutex
	var registered atomic.Int64
	sem := make(chan struct{}, cfg.Workers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range cfg.N {
		at := start.Add(time.Duration(int64(cfg.Duration) * int64(i) / int64(cfg.N)))
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(d):
			}
		}
		sem <- struct{}{}
		kind, token, pod := tokens.next(i)
		mu.Lock()
		res.Kinds[kind]++
		res.Sent++
		mu.Unlock()
		wg.Go(func() {
			defer func() { <-sem }()
			err := register(ctx, ccs[i%len(ccs)], token, cfg.Namespace, pod)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				registered.Add(1)
				return
			}
			answer := classify(err)
			res.Codes[answer]++
			if res.FirstError == "" && answer != "Refused" && answer != "Busy" {
				res.FirstError = err.Error()
			}
		})
	}
	wg.Wait()
	res.ElapsedMS = time.Since(start).Milliseconds()
	res.Registered = int(registered.Load())
	return res, nil
}

func withDefaults(cfg Config) Config {
	if cfg.Conns <= 0 {
		cfg.Conns = 8
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 200
	}
	if cfg.N <= 0 {
		cfg.N = 2000
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.Audience == "" {
		cfg.Audience = "tp-agent"
	}
	return cfg
}

// classify names the manager's answer: "Refused" (PermissionDenied or Unauthenticated,
// which only the manager sends), "Busy" (the manager's Unavailable: not reviewed now), else
// the gRPC code, e.g. Unavailable for a manager that could not be reached at all.
func classify(err error) string {
	st := status.Convert(err)
	switch {
	case st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated:
		return "Refused"
	case st.Code() == codes.Unavailable && strings.Contains(st.Message(), "not reviewed"):
		return "Busy"
	}
	return st.Code().String()
}

// register calls Agents.Watch as an agent would; nil means the manager sent it a state,
// i.e. took it for an agent.
func register(ctx context.Context, cc *grpc.ClientConn, token, ns, pod string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	stream, err := tunnelpb.NewAgentsClient(cc).Watch(ctx, &tunnelpb.AgentHello{Pod: pod, Namespace: ns, Version: "flood"})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// forger makes the tokens: a quarter garbage, a quarter from a small reused set of
// well-formed forgeries, a quarter distinct well-formed forgeries, a quarter JWTs the
// pre-check can refuse (unsigned, another audience, expired).
type forger struct {
	cfg    Config
	reused []forgery
}

type forgery struct{ token, pod string }

func newForger(cfg Config) *forger {
	f := &forger{cfg: cfg}
	for range 8 {
		f.reused = append(f.reused, f.forge(nil))
	}
	return f
}

func (f *forger) next(i int) (kind, token, pod string) {
	switch i % 4 {
	case 0:
		return "garbage", base64.StdEncoding.EncodeToString(random(300)), "garbage"
	case 1:
		r := f.reused[(i/4)%len(f.reused)]
		return "reused-forgery", r.token, r.pod
	case 2:
		r := f.forge(nil)
		return "distinct-forgery", r.token, r.pod
	}
	bad := []func(h, c map[string]any){
		func(h, _ map[string]any) { h["alg"] = "none" },
		func(_, c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc.cluster.local"} },
		func(_, c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() },
	}[(i/4)%3]
	r := f.forge(bad)
	return "malformed-jwt", r.token, r.pod
}

// forge makes a JWT shaped like a pod's projected token for the agents' audience, naming
// a made-up pod, with a random signature.
func (f *forger) forge(change func(header, claims map[string]any)) forgery {
	pod := "forged-" + hex.EncodeToString(random(4))
	now := time.Now().Unix()
	header := map[string]any{"alg": "RS256", "kid": hex.EncodeToString(random(8))}
	claims := map[string]any{
		"aud": []string{f.cfg.Audience}, "exp": now + 3600, "iat": now, "nbf": now,
		"iss": "https://kubernetes.default.svc.cluster.local",
		"sub": "system:serviceaccount:" + f.cfg.Namespace + ":default",
		"kubernetes.io": map[string]any{
			"namespace":      f.cfg.Namespace,
			"pod":            map[string]any{"name": pod, "uid": uuid()},
			"serviceaccount": map[string]any{"name": "default", "uid": uuid()},
		},
	}
	if change != nil {
		change(header, claims)
	}
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return forgery{token: enc(h) + "." + enc(c) + "." + enc(random(256)), pod: pod}
}

func uuid() string {
	b := random(16)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("flood: no randomness"))
	}
	return b
}
