package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// cert is one certificate to issue from the cluster's CA.
type cert struct {
	name   string // file stem under pki/
	cn     string
	org    string
	ips    []string
	dns    []string
	server bool
}

// writePKI makes the cluster's CA, the serving and client certificates, the service account
// key pair and the kubeconfigs the components use. Everything is made anew for each start.
func (c *Cluster) writePKI() error {
	dir := c.state("pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tp-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("pki: ca: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writePair(dir, "ca", caDER, caKey); err != nil {
		return err
	}

	certs := []cert{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			ips: []string{"10.96.0.1", "127.0.0.1", NodeIP},
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + Domain, "localhost"}},
		{name: "kubelet", cn: "system:node:" + NodeName, org: "system:nodes", server: true,
			ips: []string{NodeIP, "127.0.0.1"}, dns: []string{NodeName}},
		{name: "admin", cn: "admin", org: "system:masters"},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", org: "system:masters"},
		{name: "controller-manager", cn: "system:kube-controller-manager"},
		{name: "scheduler", cn: "system:kube-scheduler"},
		{name: "proxy", cn: "system:kube-proxy"},
	}
	for i, ct := range certs {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{CommonName: ct.cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			DNSNames:     ct.dns,
		}
		if ct.org != "" {
			tmpl.Subject.Organization = []string{ct.org}
		}
		if ct.server {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		}
		for _, ip := range ct.ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("pki: %s: %w", ct.name, err)
		}
		if err := writePair(dir, ct.name, der, key); err != nil {
			return err
		}
	}

	// Service account tokens: RSA, which every component verifies.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("pki: service account key: %w", err)
	}
	if err := writeKey(filepath.Join(dir, "sa.key"), saKey); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return fmt.Errorf("pki: service account key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return fmt.Errorf("pki: %w", err)
	}

	for _, name := range []string{"admin", "controller-manager", "scheduler", "proxy", "kubelet"} {
		if err := os.WriteFile(c.state(name+".kubeconfig"), c.kubeconfig(name), 0o600); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
	}
	return nil
}

// kubeconfig is a kubeconfig for the client certificate pki/name, with paths into the state folder.
func (c *Cluster) kubeconfig(name string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: tp-test
  cluster: {server: "https://%s:%d", certificate-authority: %q}
users:
- name: %s
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: tp-test
  context: {cluster: tp-test, user: %s}
current-context: tp-test
`, NodeIP, APIPort, c.state("pki", "ca.crt"), name, c.state("pki", name+".crt"), c.state("pki", name+".key"), name)
}

func writePair(dir, name string, der []byte, key crypto.Signer) error {
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return writeKey(filepath.Join(dir, name+".key"), key)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: %s: %w", path, err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
