package manager

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// tokenClaims are the unverified claims of a service-account token: read only to turn away,
// without an API call, what the API server would refuse anyway. Nothing in them is trusted:
// the TokenReview says whose token it is.
type tokenClaims struct {
	Alg                        string
	Issuer                     string
	Audiences                  []string
	Expiry                     float64 // seconds since the epoch
	NotBefore                  *float64
	Namespace, Pod, PodUID, SA string
}

// signingAlgs are the algorithms the API server signs service-account tokens with (RSA or
// ECDSA keys); "none" and HMAC are never the API server's.
var signingAlgs = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}

// clockLeeway is the skew the API server tolerates on exp and nbf (go-jose's default, which
// it uses): the filter must not refuse a token the review would pass.
const clockLeeway = time.Minute

type jwtHeader struct {
	Alg string `json:"alg"`
}

type jwtPayload struct {
	Iss        *string         `json:"iss"`
	Aud        json.RawMessage `json:"aud"`
	Exp        *float64        `json:"exp"`
	Nbf        *float64        `json:"nbf"`
	Kubernetes *struct {
		Namespace string `json:"namespace"`
		Pod       *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
		ServiceAccount *struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// parseTokenClaims decodes a compact JWS's header and payload: three base64url parts
// without padding, a JSON header naming an asymmetric algorithm, a JSON payload. It checks
// the shape only; checkClaims judges the content.
func parseTokenClaims(token string) (tokenClaims, error) {
	if len(token) > maxTokenLen {
		return tokenClaims{}, fmt.Errorf("the token is %d bytes; at most %d", len(token), maxTokenLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return tokenClaims{}, fmt.Errorf("the token has %d dot-separated parts, not the 3 of a JWT", len(parts))
	}
	var raw [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.Strict().DecodeString(p)
		if err != nil || len(b) == 0 {
			return tokenClaims{}, fmt.Errorf("the token's part %d is not base64url: %v", i+1, err)
		}
		raw[i] = b
	}
	var h jwtHeader
	if err := json.Unmarshal(raw[0], &h); err != nil {
		return tokenClaims{}, fmt.Errorf("the token's header is not a JSON object: %w", err)
	}
	if !slices.Contains(signingAlgs, h.Alg) {
		return tokenClaims{}, fmt.Errorf("the token is signed with %q, not an algorithm the API server signs with", h.Alg)
	}
	var p jwtPayload
	if err := json.Unmarshal(raw[1], &p); err != nil {
		return tokenClaims{}, fmt.Errorf("the token's claims are not a JSON object of a service-account token: %w", err)
	}
	c := tokenClaims{Alg: h.Alg, NotBefore: p.Nbf}
	if p.Iss != nil {
		c.Issuer = *p.Iss
	}
	aud, err := audiences(p.Aud)
	if err != nil {
		return tokenClaims{}, err
	}
	c.Audiences = aud
	if p.Exp == nil {
		return tokenClaims{}, errors.New("the token has no expiry (exp): a pod's projected token always has one")
	}
	c.Expiry = *p.Exp
	if k := p.Kubernetes; k != nil {
		c.Namespace = k.Namespace
		if k.Pod != nil {
			c.Pod, c.PodUID = k.Pod.Name, k.Pod.UID
		}
		if k.ServiceAccount != nil {
			c.SA = k.ServiceAccount.Name
		}
	}
	return c, nil
}

// audiences reads "aud", a string or an array of strings (RFC 7519 4.1.3).
func audiences(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 {
		return nil, errors.New("the token names no audience (aud)")
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("the token's audience (aud) is neither a string nor a list of strings: %w", err)
	}
	return many, nil
}

// checkClaims is the cheap verdict on a token's claims: for audience, not expired (beyond
// the API server's leeway), already valid, and bound to a pod with valid names, as every
// agent's projected token is.
func checkClaims(c tokenClaims, audience string, now time.Time) error {
	if !slices.Contains(c.Audiences, audience) {
		return fmt.Errorf("the token is for %q, not for audience %s", c.Audiences, audience)
	}
	leeway := clockLeeway.Seconds()
	unix := float64(now.UnixNano()) / 1e9
	if c.Expiry+leeway < unix {
		return fmt.Errorf("the token expired at %s", epoch(c.Expiry))
	}
	if c.NotBefore != nil && *c.NotBefore-leeway > unix {
		return fmt.Errorf("the token is not valid before %s", epoch(*c.NotBefore))
	}
	switch {
	case c.Namespace == "" || c.Pod == "" || c.PodUID == "" || c.SA == "":
		return errors.New("the token is not bound to a pod (no kubernetes.io namespace, pod and service account)")
	case len(validation.IsDNS1123Label(c.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(c.Pod)) > 0 ||
		len(validation.IsDNS1123Subdomain(c.SA)) > 0 || len(c.PodUID) > 128:
		return fmt.Errorf("the token names namespace %q, pod %q and service account %q, which are not valid names", c.Namespace, c.Pod, c.SA)
	}
	return nil
}

func epoch(sec float64) string {
	if sec > 1e11 || sec < -1e11 {
		return fmt.Sprintf("%g s after the epoch", sec)
	}
	return time.Unix(int64(sec), 0).UTC().Format(time.RFC3339)
}
