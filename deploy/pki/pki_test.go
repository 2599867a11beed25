package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)

func newCA(t *testing.T, at time.Time) *CA {
	t.Helper()
	ca, err := NewCA("tp-system", at)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// verify checks chain (PEM, server certificate first) for name against roots (PEM) as an
// agent does, at time at.
func verify(chain, roots []byte, name string, at time.Time) error {
	certs, err := ParseBundle(chain)
	if err != nil {
		return err
	}
	pool, err := Pool(roots)
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: name, CurrentTime: at})
	return err
}

func TestServerCertificateVerifiesForItsNamesOnly(t *testing.T) {
	ca := newCA(t, now)
	names := ServerNames("tp-manager", "tp-system")
	cert, _, err := ca.IssueServer(names, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range append(names, "TP-MANAGER.tp-system.svc") {
		if err := verify(cert, ca.CertPEM, n, now.Add(time.Minute)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	for _, n := range []string{"tp-manager.other.svc", "tp-manager", "evil.tp-system.svc", "10.96.0.1"} {
		if err := verify(cert, ca.CertPEM, n, now); err == nil {
			t.Errorf("%s: verified", n)
		}
	}
	if err := verify(cert, newCA(t, now).CertPEM, names[0], now); err == nil {
		t.Error("verified against another CA")
	}
	if err := verify(cert, ca.CertPEM, names[0], now.Add(ServerLifetime+time.Hour)); err == nil {
		t.Error("verified after its end")
	}
	if err := verify(cert, ca.CertPEM, names[0], now.Add(-30*time.Minute)); err != nil {
		t.Errorf("a node whose clock is 30 minutes behind: %v", err)
	}
}

// A real TLS 1.3 handshake, as between the agent and the manager.
func TestHandshake(t *testing.T) {
	ca := newCA(t, time.Now())
	names := ServerNames("tp-manager", "tp-system")
	certPEM, keyPEM, err := ca.IssueServer(names, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(roots []byte, name string) error {
		pool, err := Pool(roots)
		if err != nil {
			return err
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13})
		go func() { _ = srv.Handshake(); srv.Close() }()
		return tls.Client(b, &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS13}).Handshake()
	}
	if err := handshake(ca.CertPEM, names[0]); err != nil {
		t.Fatalf("handshake with the CA: %v", err)
	}
	if err := handshake(newCA(t, time.Now()).CertPEM, names[0]); err == nil {
		t.Fatal("handshake with another CA succeeded")
	}
	if err := handshake(ca.CertPEM, "tp-manager.other.svc"); err == nil {
		t.Fatal("handshake with another server name succeeded")
	}
}

// After a rotation the server sends its certificate from the new CA and the new CA
// cross-signed by the old one: peers that trust either CA, or both, verify it.
func TestRotationKeepsOldPeersVerifying(t *testing.T) {
	old := newCA(t, now)
	next := newCA(t, now.Add(time.Hour))
	if old.Cert.Subject.String() == next.Cert.Subject.String() {
		t.Fatal("two CAs with one subject")
	}
	cross, err := old.CrossSign(next, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	names := ServerNames("tp-manager", "tp-system")
	leaf, _, err := next.IssueServer(names, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	chain := append(leaf, cross...)
	at := now.Add(2 * time.Hour)
	for what, roots := range map[string][]byte{
		"old CA only (an agent injected before)": old.CertPEM,
		"new CA only":                            next.CertPEM,
		"the bundle":                             Bundle(at, next.CertPEM, old.CertPEM),
	} {
		if err := verify(chain, roots, names[0], at); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	if err := verify(chain, newCA(t, now).CertPEM, names[0], at); err == nil {
		t.Error("a third CA verifies the chain")
	}
	// Without the cross-signed link an old agent cannot verify.
	if err := verify(leaf, old.CertPEM, names[0], at); err == nil {
		t.Error("the old CA verifies the new server certificate alone")
	}
	if c, _ := ParseBundle(cross); c[0].NotAfter.After(old.Cert.NotAfter) {
		t.Error("the cross-signed certificate outlives its issuer")
	}
}

func TestCheckServer(t *testing.T) {
	ca := newCA(t, now)
	names := ServerNames("tp-manager", "tp-system")
	cert, _, err := ca.IssueServer(names, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckServer(cert, ca, names, now.Add(24*time.Hour)); err != nil {
		t.Fatalf("a fresh certificate: %v", err)
	}
	for what, c := range map[string]struct {
		chain []byte
		ca    *CA
		names []string
		at    time.Time
		want  string
	}{
		"another CA":        {cert, newCA(t, now), names, now, "not issued by the current CA"},
		"another namespace": {cert, ca, ServerNames("tp-manager", "tp-x"), now, "does not name tp-manager.tp-x.svc"},
		"close to its end":  {cert, ca, names, now.Add(ServerLifetime - RenewBefore + time.Hour), "expires"},
		"garbage":           {[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), ca, names, now, "certificate 1"},
		"empty":             {nil, ca, names, now, "no PEM certificate"},
	} {
		err := CheckServer(c.chain, c.ca, c.names, c.at)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", what, err, c.want)
		}
	}
}

func TestLoadCA(t *testing.T) {
	ca := newCA(t, now)
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := LoadCA(ca.CertPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Cert.Equal(ca.Cert) || !back.Key.Equal(ca.Key) {
		t.Fatal("the CA read back differs")
	}
	otherKey, _ := newCA(t, now).KeyPEM()
	leaf, leafKey, _ := ca.IssueServer([]string{"x"}, now)
	for what, c := range map[string][2][]byte{
		"another CA's key":     {ca.CertPEM, otherKey},
		"a server certificate": {leaf, leafKey},
		"no key":               {ca.CertPEM, nil},
		"two certificates":     {append(bytes.Clone(ca.CertPEM), ca.CertPEM...), key},
	} {
		if _, err := LoadCA(c[0], c[1]); err == nil {
			t.Errorf("%s: loaded", what)
		}
	}
}

func TestBundleDropsRepeatsAndExpired(t *testing.T) {
	a, b := newCA(t, now), newCA(t, now.Add(-CALifetime))
	got, err := ParseBundle(Bundle(now.Add(time.Hour), a.CertPEM, a.CertPEM, []byte("junk"), b.CertPEM))
	if err != nil || len(got) != 1 || !got[0].Equal(a.Cert) {
		t.Fatalf("bundle: %v %v", got, err)
	}
	leaf, _, _ := a.IssueServer([]string{"x"}, now)
	if _, err := Pool(leaf); err == nil {
		t.Error("a server certificate accepted as a CA")
	}
}

// FuzzParseBundle: the CA bundle reaches the agent through its environment and the CLI
// through a ConfigMap that anyone who can edit tp's namespace can write.
func FuzzParseBundle(f *testing.F) {
	ca, err := NewCA("fuzz", now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM)
	f.Add(append([]byte("text before\n"), ca.CertPEM...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseBundle(b)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
		if _, err := Pool(b); err == nil && len(certs) == 0 {
			t.Fatal("a pool from nothing")
		}
		_ = Bundle(now, b)
	})
}
