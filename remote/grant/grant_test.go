package grant

import (
	"strings"
	"testing"
)

func goodLease(secret string) Lease {
	return Lease{
		Labels: map[string]string{Label: Version},
		Annotations: map[string]string{
			WorkloadAnnotation: Workload("Deployment", "web"), PortAnnotation: "http", SecretAnnotation: Hash(secret),
		},
		Holder: "alice",
	}
}

func TestCheck(t *testing.T) {
	secret, hash, err := NewSecret()
	if err != nil || len(secret) != 64 || hash != Hash(secret) {
		t.Fatalf("NewSecret = %q %q %v", secret, hash, err)
	}
	req := Request{Namespace: "shop", Kind: "Deployment", Workload: "web", Port: "http", Secret: secret}
	if holder, err := Check(goodLease(secret), "tp-web-http", req); err != nil || holder != "alice" {
		t.Fatalf("a good grant: %q %v", holder, err)
	}
	lower := req
	lower.Kind = "deployment" // kinds are compared as the registry keys them
	if _, err := Check(goodLease(secret), "tp-web-http", lower); err != nil {
		t.Errorf("kind in lower case: %v", err)
	}
	for name, c := range map[string]struct {
		edit func(*Lease, *Request)
		want string
	}{
		"no label":                {func(l *Lease, _ *Request) { delete(l.Labels, Label) }, "not a tp intercept grant"},
		"other version":           {func(l *Lease, _ *Request) { l.Labels[Label] = "v0" }, "not a tp intercept grant"},
		"no holder":               {func(l *Lease, _ *Request) { l.Holder = "" }, "names no holder"},
		"other workload":          {func(_ *Lease, r *Request) { r.Workload = "db" }, `is for "Deployment/web"`},
		"other kind":              {func(_ *Lease, r *Request) { r.Kind = "StatefulSet" }, `is for "Deployment/web"`},
		"other port":              {func(_ *Lease, r *Request) { r.Port = "grpc" }, `is for port "http"`},
		"wrong secret":            {func(_ *Lease, r *Request) { r.Secret = "guess" }, "secret does not match"},
		"no secret":               {func(_ *Lease, r *Request) { r.Secret = "" }, "secret does not match"},
		"no hash":                 {func(l *Lease, _ *Request) { delete(l.Annotations, SecretAnnotation) }, "secret does not match"},
		"hash as secret":          {func(l *Lease, r *Request) { r.Secret = l.Annotations[SecretAnnotation] }, "secret does not match"},
		"truncated hash":          {func(l *Lease, _ *Request) { l.Annotations[SecretAnnotation] = Hash(secret)[:32] }, "secret does not match"},
		"nil annotations":         {func(l *Lease, _ *Request) { l.Annotations = nil }, "is for"},
		"egress for an intercept": {func(l *Lease, _ *Request) { l.Annotations[UseAnnotation] = UseEgress }, "is an egress grant, not an intercept grant"},
		"intercept for egress":    {func(_ *Lease, r *Request) { r.Use, r.Port = UseEgress, "" }, "is an intercept grant, not an egress grant"},
	} {
		l, r := goodLease(secret), req
		c.edit(&l, &r)
		if _, err := Check(l, "tp-web-http", r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}

func TestEgress(t *testing.T) {
	secret, hash, _ := NewSecret()
	l := goodLease(secret)
	l.Annotations[UseAnnotation], l.Annotations[PortAnnotation] = UseEgress, ""
	req := Request{Namespace: "shop", Kind: "Deployment", Workload: "web", Secret: secret, Use: UseEgress}
	if holder, err := Check(l, EgressLeaseName("web", hash), req); err != nil || holder != "alice" {
		t.Fatalf("a good egress grant: %q %v", holder, err)
	}
	long := EgressLeaseName(strings.Repeat("a", 39)+"-"+strings.Repeat("b", 200), hash)
	if len(long) > 63 || strings.Contains(long, "--") || !strings.HasSuffix(long, "-"+hash[:10]) {
		t.Errorf("a long workload's egress grant is named %q: want a valid name of at most 63 characters ending in the hash", long)
	}
	if EgressLeaseName("web", hash) == EgressLeaseName("web", Hash("other")) {
		t.Error("two runs' egress grants share a name")
	}
}

// FuzzCheck reads grants whose every field an intercepter (or anyone with lease rights)
// may write: a grant passes only with the secret whose hash it carries.
func FuzzCheck(f *testing.F) {
	f.Add("v1", "Deployment/web", "http", Hash("s"), "alice", "s")
	f.Add("v1", "Deployment/web", "http", Hash("s"), "alice", Hash("s"))
	f.Add("v1", "deployment/WEB", "http", strings.ToUpper(Hash("s")), "", "s")
	f.Add("", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, version, workload, port, hash, holder, secret string) {
		l := Lease{Labels: map[string]string{Label: version}, Holder: holder,
			Annotations: map[string]string{WorkloadAnnotation: workload, PortAnnotation: port, SecretAnnotation: hash}}
		got, err := Check(l, "tp-x", Request{Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http", Secret: secret})
		if err != nil {
			return
		}
		if got != holder || holder == "" || version != Version || !strings.EqualFold(hash, Hash(secret)) || port != "http" {
			t.Fatalf("accepted %+v for secret %q (holder %q)", l, secret, got)
		}
	})
}
