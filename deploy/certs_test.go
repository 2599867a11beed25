package deploy

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/remote"
)

// installed is what an install left of its certificates in the fake cluster.
type installed struct {
	ca, tls *corev1.Secret
	bundle  []byte
	hash    string
}

func (f *fakeInstaller) certs(t *testing.T) installed {
	t.Helper()
	ctx := context.Background()
	var got installed
	var err error
	if got.ca, err = f.cs.CoreV1().Secrets(ns).Get(ctx, CASecret, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if got.tls, err = f.cs.CoreV1().Secrets(ns).Get(ctx, TLSSecret, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if got.bundle, err = f.agentCA(ctx, ns); err != nil {
		t.Fatal(err)
	}
	for _, o := range f.applied {
		if o.GetKind() == "Deployment" {
			got.hash, _, _ = unstructured.NestedString(o.Object, "spec", "template", "metadata", "annotations", HashAnnotation)
		}
	}
	for _, o := range []metav1.Object{got.ca, got.tls} {
		if o.GetLabels()[ManagedByLabel] != ManagedByValue || o.GetLabels()[InstanceLabel] != ns {
			t.Errorf("%s has labels %v: uninstall would not find it", o.GetName(), o.GetLabels())
		}
	}
	return got
}

// verifies checks that the manager's chain in s verifies for its Service name against
// roots alone, as an agent given roots does.
func verifies(t *testing.T, s *corev1.Secret, roots []byte) error {
	t.Helper()
	certs, err := pki.ParseBundle(s.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.Pool(roots)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: "tp-manager." + ns + ".svc"})
	return err
}

func installOnce(t *testing.T, f *fakeInstaller, rotate bool) installed {
	t.Helper()
	f.applied = nil
	opts, _ := Options{Image: testImage, RotateCA: rotate}.withDefaults(true)
	if _, err := f.install(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	return f.certs(t)
}

func writes(f *fakeInstaller) int {
	n := 0
	for _, a := range f.cs.Actions() {
		if (a.GetVerb() == "create" || a.GetVerb() == "update" || a.GetVerb() == "delete") &&
			(a.GetResource().Resource == "secrets" || a.GetResource().Resource == "configmaps") {
			n++
		}
	}
	return n
}

func TestInstallKeepsTheCAAndTheCertificate(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	first := installOnce(t, f, false)
	if n := len(mustParse(t, first.bundle)); n != 1 {
		t.Fatalf("bundle of %d certificates, want the CA", n)
	}
	if err := verifies(t, first.tls, first.bundle); err != nil {
		t.Fatalf("the manager's certificate does not verify against the bundle: %v", err)
	}
	if first.tls.Type != corev1.SecretTypeTLS || len(first.tls.Data[corev1.TLSPrivateKeyKey]) == 0 {
		t.Errorf("server Secret: type %s, keys %d", first.tls.Type, len(first.tls.Data))
	}
	if first.hash == "" {
		t.Fatal("no config hash")
	}
	if !strings.Contains(f.log.String(), "made tp's CA") {
		t.Errorf("the log does not say a CA was made:\n%s", f.log.String())
	}
	// Again: nothing written, the same hash (the manager does not restart).
	before := writes(f)
	again := installOnce(t, f, false)
	if writes(f) != before || again.hash != first.hash || string(again.tls.Data[corev1.TLSCertKey]) != string(first.tls.Data[corev1.TLSCertKey]) {
		t.Errorf("a second install wrote %d objects, hash %s -> %s", writes(f)-before, first.hash, again.hash)
	}
}

func TestInstallRenewsTheCertificateFromTheKeptCA(t *testing.T) {
	f := newFake(t)
	now := time.Now()
	p, err := f.planCerts(context.Background(), ns, false, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.writeCerts(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	for what, at := range map[string]time.Time{
		"kept a week later":        now.Add(7 * 24 * time.Hour),
		"renewed close to its end": now.Add(pki.ServerLifetime - pki.RenewBefore + time.Hour),
	} {
		q, err := f.planCerts(context.Background(), ns, false, at)
		if err != nil {
			t.Fatal(err)
		}
		sameCA := string(q.caSecret.Data["ca.key"]) == string(p.caSecret.Data["ca.key"])
		sameCert := q.fingerprint == p.fingerprint
		if !sameCA || sameCert != strings.HasPrefix(what, "kept") {
			t.Errorf("%s: same CA %v, same certificate %v", what, sameCA, sameCert)
		}
	}
	// Another namespace's certificate (a copied Secret) is replaced.
	sec, _ := f.cs.CoreV1().Secrets(ns).Get(context.Background(), TLSSecret, metav1.GetOptions{})
	ca, _ := pki.LoadCA(p.caSecret.Data["ca.crt"], p.caSecret.Data["ca.key"])
	sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey], _ = ca.IssueServer(ManagerServerNames("elsewhere"), now)
	if _, err := f.cs.CoreV1().Secrets(ns).Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	q, err := f.planCerts(context.Background(), ns, false, now)
	if err != nil || q.fingerprint == pki.Fingerprint(sec.Data[corev1.TLSCertKey]) {
		t.Fatalf("a certificate for other names kept: %v", err)
	}
	if !strings.Contains(strings.Join(q.notes, "\n"), "does not name tp-manager.tp-system.svc") {
		t.Errorf("notes %q do not say why", q.notes)
	}
}

// --rotate-ca: a new CA; the bundle holds both; the manager's chain verifies against the
// old CA alone (agents injected before) and the new alone; the manager restarts.
func TestRotateCA(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	first := installOnce(t, f, false)
	rotated := installOnce(t, f, true)
	if string(rotated.ca.Data["ca.crt"]) == string(first.ca.Data["ca.crt"]) {
		t.Fatal("the CA did not change")
	}
	if rotated.hash == first.hash {
		t.Error("the config hash did not change: the manager would keep the old certificate")
	}
	b := mustParse(t, rotated.bundle)
	if len(b) != 2 || string(pemOf(t, b[0])) != string(rotated.ca.Data["ca.crt"]) || string(pemOf(t, b[1])) != string(first.ca.Data["ca.crt"]) {
		t.Fatalf("bundle after rotation: %d certificates, want the new CA then the old", len(b))
	}
	for what, roots := range map[string][]byte{"old CA": first.ca.Data["ca.crt"], "new CA": rotated.ca.Data["ca.crt"], "bundle": rotated.bundle} {
		if err := verifies(t, rotated.tls, roots); err != nil {
			t.Errorf("against the %s: %v", what, err)
		}
	}
	// A reinstall keeps all of it; a second rotation drops the first CA.
	if again := installOnce(t, f, false); again.hash != rotated.hash || string(again.bundle) != string(rotated.bundle) {
		t.Error("a reinstall after a rotation changed the certificates")
	}
	second := installOnce(t, f, true)
	if err := verifies(t, second.tls, first.ca.Data["ca.crt"]); err == nil {
		t.Error("two rotations later the first CA still verifies the manager")
	}
	if err := verifies(t, second.tls, rotated.ca.Data["ca.crt"]); err != nil {
		t.Errorf("after a second rotation, against the CA before it: %v", err)
	}
	if n := len(mustParse(t, second.bundle)); n != 2 {
		t.Errorf("bundle after two rotations: %d certificates, want 2", n)
	}
}

func TestInstallRefusesAnUnusableCA(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	installOnce(t, f, false)
	sec, _ := f.cs.CoreV1().Secrets(ns).Get(context.Background(), CASecret, metav1.GetOptions{})
	sec.Data["ca.key"] = []byte("garbage")
	if _, err := f.cs.CoreV1().Secrets(ns).Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	opts, _ := Options{Image: testImage}.withDefaults(true)
	_, err := f.install(context.Background(), opts)
	wantKind(t, err, remote.Cluster, "Secret tp-system/tp-ca-key holds no usable CA", "--rotate-ca")
	installOnce(t, f, true)
}

func TestAgentCA(t *testing.T) {
	f := newFake(t)
	_, err := f.agentCA(context.Background(), ns)
	wantKind(t, err, remote.NotInstalled, "tp's CA (ConfigMap tp-system/tp-ca) is missing", "tp install again")
	if _, err := f.cs.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: CAConfigMap, Namespace: ns}, Data: map[string]string{CABundleKey: "junk"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.agentCA(context.Background(), ns)
	wantKind(t, err, remote.Cluster, "holds no usable CA bundle")
}

func TestUninstallFromAForeignNamespaceRemovesTheCertificates(t *testing.T) {
	f := newFake(t, newRollout(running()).done().objects()...)
	if err := f.cs.Tracker().Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	installOnce(t, f, false)
	ctx := context.Background()
	for _, p := range []string{"tp-manager-old-1", "tp-manager-new-1"} {
		if err := f.cs.CoreV1().Pods(ns).Delete(ctx, p, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.uninstall(ctx, Options{Namespace: ns, Timeout: time.Second, Log: &f.log}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CASecret, TLSSecret} {
		if _, err := f.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s after uninstall: %v", name, err)
		}
	}
	if _, err := f.cs.CoreV1().ConfigMaps(ns).Get(ctx, CAConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap %s after uninstall: %v", CAConfigMap, err)
	}
}

func mustParse(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	c, err := pki.ParseBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(_ *testing.T, c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
