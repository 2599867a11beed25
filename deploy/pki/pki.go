// Package pki makes the certificates that secure the connection between tp's traffic agents
// and the traffic manager: a CA that tp install keeps in the cluster, and the manager's
// server certificate signed by it. It uses the standard library only: the agent, a small
// program in every intercepted pod, imports it to read the CA it trusts.
//
// Keys are ECDSA P-256: small certificates (an agent carries its CA bundle in an
// environment variable) and fast handshakes.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

const (
	// CALifetime is how long a CA is valid: long, because agents carry it until re-injected.
	CALifetime = 10 * 365 * 24 * time.Hour
	// ServerLifetime is how long a server certificate is valid; tp install issues a new one
	// when less than a third of it is left.
	ServerLifetime = 2 * 365 * 24 * time.Hour
	// RenewBefore is how close to its end a server certificate is replaced.
	RenewBefore = ServerLifetime / 3
	// backdate covers clocks of nodes that run a little behind the one that signs.
	backdate = time.Hour
)

// ServerNames are the DNS names of the manager's Service in namespace, as agents may name
// it; the first is the one tp's agents use.
func ServerNames(service, namespace string) []string {
	return []string{service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local", service + "." + namespace}
}

// CA is a certificate authority with its key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA named after name (e.g. the install's namespace), valid from
// now for CALifetime. Each CA gets a distinct subject, so that a certificate cross-signed
// from an older CA (see CrossSign) can be told from it.
func NewCA(name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{Organization: []string{"tp"},
			CommonName: fmt.Sprintf("tp agents CA %s %s", name, now.UTC().Format("20060102T150405Z"))},
		NotBefore: now.Add(-backdate),
		NotAfter:  now.Add(CALifetime),
		KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		IsCA:      true, BasicConstraintsValid: true,
		// One intermediate below: the next CA cross-signed by this one.
		MaxPathLen: 1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("read back the CA certificate: %w", err)
	}
	return &CA{Cert: cert, CertPEM: certPEM(der), Key: key}, nil
}

// LoadCA reads a CA back from its PEM certificate and PEM (PKCS #8) key.
func LoadCA(certPEMBytes, keyPEM []byte) (*CA, error) {
	certs, err := ParseBundle(certPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if len(certs) != 1 || !certs[0].IsCA {
		return nil, errors.New("CA certificate: want exactly one CA certificate")
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("CA key: no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, errors.New("CA key: not the key of the CA certificate")
	}
	return &CA{Cert: certs[0], CertPEM: certPEM(certs[0].Raw), Key: key}, nil
}

// KeyPEM is the CA's key, PEM (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// CrossSign returns next's certificate signed by ca (PEM): an intermediate that leads from
// ca to next. A server that sends it after its own certificate (issued by next) is trusted
// by peers that trust only ca: agents injected before a CA rotation keep verifying the
// manager until they are injected again with the new bundle.
func (ca *CA) CrossSign(next *CA, now time.Time) ([]byte, error) {
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      next.Cert.Subject,
		SubjectKeyId: next.Cert.SubjectKeyId,
		NotBefore:    now.Add(-backdate),
		NotAfter:     minTime(next.Cert.NotAfter, ca.Cert.NotAfter),
		KeyUsage:     next.Cert.KeyUsage,
		IsCA:         true, BasicConstraintsValid: true,
		MaxPathLen: 0, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, next.Cert.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("cross-sign the new CA: %w", err)
	}
	return certPEM(der), nil
}

// IssueServer returns a server certificate for names (PEM) signed by ca, valid from now for
// ServerLifetime (never past the CA's end), and its key (PEM).
func (ca *CA) IssueServer(names []string, now time.Time) (cert, key []byte, err error) {
	if len(names) == 0 {
		return nil, nil, errors.New("server certificate: no names")
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate server key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"tp"}, CommonName: names[0]},
		DNSNames:     slices.Clone(names),
		NotBefore:    now.Add(-backdate),
		NotAfter:     minTime(now.Add(ServerLifetime), ca.Cert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &k.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign server certificate: %w", err)
	}
	kp, err := keyPEM(k)
	if err != nil {
		return nil, nil, err
	}
	return certPEM(der), kp, nil
}

// CheckServer reports why the server certificate chain (PEM: the server's certificate first,
// then intermediates) is not fit to keep serving names for ca at now: it does not parse, is
// not issued by ca, lacks a name, or has less than RenewBefore left. nil: keep it.
func CheckServer(chain []byte, ca *CA, names []string, now time.Time) error {
	certs, err := ParseBundle(chain)
	if err != nil {
		return err
	}
	leaf := certs[0]
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		return fmt.Errorf("not issued by the current CA: %w", err)
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(n); err != nil {
			return fmt.Errorf("does not name %s", n)
		}
	}
	if left := leaf.NotAfter.Sub(now); left < RenewBefore {
		return fmt.Errorf("expires %s", leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return nil
}

// ParseBundle reads every CERTIFICATE block of a PEM bundle; other blocks and text between
// them are ignored. A bundle without a certificate, or with one that does not parse, is an
// error.
func ParseBundle(bundle []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := bundle; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the bundle: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return certs, nil
}

// Pool is the CA certificates of a PEM bundle, as roots to verify a server by.
func Pool(bundle []byte) (*x509.CertPool, error) {
	certs, err := ParseBundle(bundle)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		if !c.IsCA {
			return nil, fmt.Errorf("%q is not a CA certificate", c.Subject.CommonName)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// Bundle joins PEM certificates into one bundle, in order, leaving out repeats and those
// expired at now.
func Bundle(now time.Time, pems ...[]byte) []byte {
	var out bytes.Buffer
	seen := map[string]bool{}
	for _, p := range pems {
		certs, err := ParseBundle(p)
		if err != nil {
			continue
		}
		for _, c := range certs {
			if seen[string(c.Raw)] || now.After(c.NotAfter) {
				continue
			}
			seen[string(c.Raw)] = true
			out.Write(certPEM(c.Raw))
		}
	}
	return out.Bytes()
}

// Fingerprint is a short digest of b (a certificate chain): it changes when the
// certificate does.
func Fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	return n, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
