package manager

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/remote/agentspec"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParseTokenClaimsReadsAProjectedToken(t *testing.T) {
	c, err := parseTokenClaims(agentJWT)
	if err != nil {
		t.Fatal(err)
	}
	if c.Alg != "RS256" || !slices.Equal(c.Audiences, []string{agentspec.Audience}) || c.Issuer != "https://kubernetes.default.svc.cluster.local" ||
		c.Namespace != "default" || c.Pod != webAgent.Pod || c.PodUID != webAgent.UID || c.SA != "web" || c.NotBefore == nil {
		t.Fatalf("claims %+v", c)
	}
	if err := checkClaims(c, agentspec.Audience, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := checkClaims(c, agentspec.Audience, time.Now().Add(2*time.Hour)); err == nil {
		t.Fatal("an hour-long token passed two hours on")
	}
}

// FuzzTokenClaims feeds the pre-check any bearer token. It must never panic, and what it
// passes must be a compact JWS of three base64url parts, signed with an asymmetric
// algorithm, for the agents' audience, unexpired, and bound to a pod with valid names.
func FuzzTokenClaims(f *testing.F) {
	f.Add(agentJWT)
	f.Add(jwt(func(_, c map[string]any) { c["aud"] = agentspec.Audience }))
	f.Add(jwt(func(h, _ map[string]any) { h["alg"] = "none" }))
	f.Add(jwt(func(_, c map[string]any) { c["exp"] = 1e300 }))
	f.Add(jwt(func(_, c map[string]any) { c["exp"] = -1e300 }))
	f.Add(jwt(func(_, c map[string]any) { c["kubernetes.io"] = nil }))
	f.Add(jwt(func(_, c map[string]any) { c["aud"] = []any{agentspec.Audience, 1} }))
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
	f.Add("..")
	f.Add("a.b.c")
	f.Add("forged")
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ0cC1hZ2VudCIsImV4cCI6OTk5OTk5OTk5OX0.c2ln")
	now := time.Now()
	f.Fuzz(func(t *testing.T, token string) {
		c, err := parseTokenClaims(token)
		if err != nil {
			if !reflectZero(c) {
				t.Fatalf("parseTokenClaims(%q) failed with claims %+v", token, c)
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 || len(token) > maxTokenLen {
			t.Fatalf("parseTokenClaims passed %q", token)
		}
		for _, p := range parts {
			if b, err := base64.RawURLEncoding.Strict().DecodeString(p); err != nil || len(b) == 0 {
				t.Fatalf("parseTokenClaims passed part %q of %q", p, token)
			}
		}
		header, _ := base64.RawURLEncoding.DecodeString(parts[0])
		if !json.Valid(header) || !slices.Contains(signingAlgs, c.Alg) {
			t.Fatalf("parseTokenClaims passed header %q", header)
		}
		if err := checkClaims(c, agentspec.Audience, now); err != nil {
			if err.Error() == "" {
				t.Fatal("an empty refusal")
			}
			return
		}
		switch {
		case !slices.Contains(c.Audiences, agentspec.Audience):
			t.Fatalf("passed audiences %q", c.Audiences)
		case c.Expiry+clockLeeway.Seconds() < float64(now.Unix()):
			t.Fatalf("passed a token that expired at %g", c.Expiry)
		case len(validation.IsDNS1123Label(c.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(c.Pod)) > 0 ||
			len(validation.IsDNS1123Subdomain(c.SA)) > 0 || c.PodUID == "":
			t.Fatalf("passed a token bound to %q/%q (uid %q, account %q)", c.Namespace, c.Pod, c.PodUID, c.SA)
		}
	})
}

func reflectZero(c tokenClaims) bool {
	return c.Alg == "" && c.Issuer == "" && c.Audiences == nil && c.Expiry == 0 && c.NotBefore == nil &&
		c.Namespace == "" && c.Pod == "" && c.PodUID == "" && c.SA == ""
}
