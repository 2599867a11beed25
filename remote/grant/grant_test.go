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
		"no label":        {func(l *Lease, _ *Request) { delete(l.Labels, Label) }, "not a tp intercept grant"},
		"other version":   {func(l *Lease, _ *Request) { l.Labels[Label] = "v0" }, "not a tp intercept grant"},
		"no holder":       {func(l *Lease, _ *Request) { l.Holder = "" }, "names no holder"},
		"other workload":  {func(_ *Lease, r *Request) { r.Workload = "db" }, `is for "Deployment/web"`},
		"other kind":      {func(_ *Lease, r *Request) { r.Kind = "StatefulSet" }, `is for "Deployment/web"`},
		"other port":      {func(_ *Lease, r *Request) { r.Port = "grpc" }, `is for port "http"`},
		"wrong secret":    {func(_ *Lease, r *Request) { r.Secret = "guess" }, "secret does not match"},
		"no secret":       {func(_ *Lease, r *Request) { r.Secret = "" }, "secret does not match"},
		"no hash":         {func(l *Lease, _ *Request) { delete(l.Annotations, SecretAnnotation) }, "secret does not match"},
		"hash as secret":  {func(l *Lease, r *Request) { r.Secret = l.Annotations[SecretAnnotation] }, "secret does not match"},
		"truncated hash":  {func(l *Lease, _ *Request) { l.Annotations[SecretAnnotation] = Hash(secret)[:32] }, "secret does not match"},
		"nil annotations": {func(l *Lease, _ *Request) { l.Annotations = nil }, "is for"},
	} {
		l, r := goodLease(secret), req
		c.edit(&l, &r)
		if _, err := Check(l, "tp-web-http", r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
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
