package deploy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/deploy/pki"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/managerspec"
)

// The objects that secure the manager's cluster port, in tp's namespace. tp install makes
// them; they are not in the rendered manifest (keys have no place in --dry-run's output).
const (
	// CASecret holds tp's CA (ca.crt, ca.key) and, after a rotation, the previous CA
	// (previous.crt) and the new CA cross-signed by it (cross.crt). Nothing mounts it:
	// only tp install signs with it.
	CASecret = "tp-ca-key"
	// TLSSecret holds the manager's server certificate (tls.crt: the certificate, then the
	// cross-signed CA after a rotation) and key (tls.key); the manager mounts it.
	TLSSecret = managerspec.TLSSecret
	// CAConfigMap holds the CA bundle agents trust (CABundleKey): public. The CLI reads it
	// when it injects an agent.
	CAConfigMap = "tp-ca"
	CABundleKey = "ca.crt"
)

// certPlan is what the install's certificates are to be, and the objects as found.
type certPlan struct {
	caSecret, tlsSecret *corev1.Secret
	bundle              *corev1.ConfigMap
	found               map[string]metav1.Object // by kind/name, what exists now
	// fingerprint digests the server certificate: part of the Deployment's config hash,
	// so that the manager restarts with a new one.
	fingerprint string
	notes       []string
}

// ManagerServerNames are the names the manager's certificate is issued for; agents use the
// first.
func ManagerServerNames(namespace string) []string {
	return pki.ServerNames(ManagerName, namespace)
}

// planCerts reads the install's CA and server certificate and works out what they must be:
// the CA is kept (a new one only when there is none, or with rotate), the server
// certificate too unless it is not the current CA's, lacks a name, or nears its end (then
// the kept CA issues another).
func (in *installer) planCerts(ctx context.Context, namespace string, rotate bool, now time.Time) (*certPlan, error) {
	p := &certPlan{found: map[string]metav1.Object{}}
	secrets := in.cs.CoreV1().Secrets(namespace)
	caSec, err := secrets.Get(ctx, CASecret, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, APIError(Request{Host: in.host, Action: "install tp", What: "get Secret " + namespace + "/" + CASecret, Needs: installNeeds}, err)
	}
	var ca *pki.CA
	var previous, cross []byte
	if err == nil {
		p.found["Secret/"+CASecret] = caSec
		var lerr error
		ca, lerr = pki.LoadCA(caSec.Data["ca.crt"], caSec.Data["ca.key"])
		if lerr != nil && !rotate {
			return nil, &remote.Error{Kind: remote.Cluster, Err: lerr,
				Msg:  fmt.Sprintf("Secret %s/%s holds no usable CA", namespace, CASecret),
				Hint: "tp install --rotate-ca makes a new one (each workload's agent gets it at its next tp intercept)"}
		}
		previous, cross = caSec.Data["previous.crt"], caSec.Data["cross.crt"]
	}
	switch {
	case ca == nil || rotate:
		next, err := pki.NewCA(namespace, now)
		if err != nil {
			return nil, err
		}
		previous, cross = nil, nil
		if ca != nil {
			if cross, err = ca.CrossSign(next, now); err != nil {
				return nil, err
			}
			previous = ca.CertPEM
			p.notes = append(p.notes, "made a new CA; agents injected before trust the old one, which has signed the new one, until their next tp intercept")
		} else {
			p.notes = append(p.notes, fmt.Sprintf("made tp's CA (Secret %s/%s)", namespace, CASecret))
		}
		ca = next
	case len(pki.Bundle(now, previous)) == 0 || len(pki.Bundle(now, cross)) == 0:
		// The previous CA has ended: nothing verifies through it any more.
		previous, cross = nil, nil
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	caData := map[string][]byte{"ca.crt": ca.CertPEM, "ca.key": caKey}
	if cross != nil {
		caData["previous.crt"], caData["cross.crt"] = previous, cross
	}
	p.caSecret = &corev1.Secret{ObjectMeta: objectMeta(CASecret, namespace), Type: corev1.SecretTypeOpaque, Data: caData}

	tlsSec, err := secrets.Get(ctx, TLSSecret, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, APIError(Request{Host: in.host, Action: "install tp", What: "get Secret " + namespace + "/" + TLSSecret, Needs: installNeeds}, err)
	}
	names := ManagerServerNames(namespace)
	var chain, key []byte
	if err == nil {
		p.found["Secret/"+TLSSecret] = tlsSec
		chain, key = tlsSec.Data[corev1.TLSCertKey], tlsSec.Data[corev1.TLSPrivateKeyKey]
		if why := keepServer(chain, key, cross, ca, names, now); why != nil {
			p.notes = append(p.notes, fmt.Sprintf("issuing a new server certificate: the one in Secret %s/%s %v", namespace, TLSSecret, why))
			chain = nil
		}
	}
	if chain == nil {
		leaf, k, err := ca.IssueServer(names, now)
		if err != nil {
			return nil, err
		}
		chain, key = append(leaf, cross...), k
	}
	p.tlsSecret = &corev1.Secret{ObjectMeta: objectMeta(TLSSecret, namespace), Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: chain, corev1.TLSPrivateKeyKey: key}}
	p.fingerprint = pki.Fingerprint(chain)

	cm, err := in.cs.CoreV1().ConfigMaps(namespace).Get(ctx, CAConfigMap, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, APIError(Request{Host: in.host, Action: "install tp", What: "get ConfigMap " + namespace + "/" + CAConfigMap, Needs: installNeeds}, err)
	}
	if err == nil {
		p.found["ConfigMap/"+CAConfigMap] = cm
	}
	// The new CA first, and the one before it while it lasts: agents injected from this
	// bundle verify the old manager too while a rotation rolls it.
	p.bundle = &corev1.ConfigMap{ObjectMeta: objectMeta(CAConfigMap, namespace),
		Data: map[string]string{CABundleKey: string(pki.Bundle(now, ca.CertPEM, previous))}}
	return p, nil
}

// keepServer says why the server certificate chain and key cannot be kept; nil: keep them.
func keepServer(chain, key, cross []byte, ca *pki.CA, names []string, now time.Time) error {
	if err := pki.CheckServer(chain, ca, names, now); err != nil {
		return err
	}
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		return fmt.Errorf("does not go with its key: %w", err)
	}
	certs, _ := pki.ParseBundle(chain)
	var links []*x509.Certificate
	if cross != nil {
		links, _ = pki.ParseBundle(cross)
	}
	if !slices.EqualFunc(certs[1:], links, (*x509.Certificate).Equal) {
		return errors.New("does not carry the link from the previous CA")
	}
	return nil
}

// writeCerts creates or updates the objects of p that differ from what was found: the CA
// first, so that an install cut short leaves a CA the next one keeps.
func (in *installer) writeCerts(ctx context.Context, p *certPlan) error {
	for _, s := range []*corev1.Secret{p.caSecret, p.tlsSecret} {
		secrets := in.cs.CoreV1().Secrets(s.Namespace)
		old, _ := p.found["Secret/"+s.Name].(*corev1.Secret)
		var err error
		switch {
		case old == nil:
			_, err = secrets.Create(ctx, s, metav1.CreateOptions{FieldManager: FieldManager})
		case maps.EqualFunc(old.Data, s.Data, bytes.Equal) && old.Type == s.Type && hasLabels(old, s.Labels):
			continue
		case old.Type != s.Type:
			// A Secret's type cannot change: make it anew.
			if err = secrets.Delete(ctx, s.Name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
				_, err = secrets.Create(ctx, s, metav1.CreateOptions{FieldManager: FieldManager})
			}
		default:
			s = s.DeepCopy()
			s.ResourceVersion = old.ResourceVersion
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{FieldManager: FieldManager})
		}
		if err != nil {
			return APIError(Request{Host: in.host, Action: "install tp", What: "write Secret " + s.Namespace + "/" + s.Name, Needs: installNeeds}, err)
		}
	}
	cms := in.cs.CoreV1().ConfigMaps(p.bundle.Namespace)
	old, _ := p.found["ConfigMap/"+CAConfigMap].(*corev1.ConfigMap)
	var err error
	switch {
	case old == nil:
		_, err = cms.Create(ctx, p.bundle, metav1.CreateOptions{FieldManager: FieldManager})
	case maps.Equal(old.Data, p.bundle.Data) && hasLabels(old, p.bundle.Labels):
	default:
		cm := p.bundle.DeepCopy()
		cm.ResourceVersion = old.ResourceVersion
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: FieldManager})
	}
	if err != nil {
		return APIError(Request{Host: in.host, Action: "install tp", What: "write ConfigMap " + p.bundle.Namespace + "/" + CAConfigMap, Needs: installNeeds}, err)
	}
	return nil
}

func hasLabels(o metav1.Object, want map[string]string) bool {
	for k, v := range want {
		if o.GetLabels()[k] != v {
			return false
		}
	}
	return true
}

func objectMeta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{
		ManagedByLabel: ManagedByValue, "app.kubernetes.io/part-of": "tp", InstanceLabel: namespace,
	}}
}

// AgentCA returns the CA bundle (PEM) agents of the install in namespace ("" for
// DefaultNamespace) verify the manager by: tp intercept puts it in the agent.
func AgentCA(ctx context.Context, cfg *rest.Config, namespace string) ([]byte, error) {
	in, namespace, err := reader(cfg, namespace)
	if err != nil {
		return nil, err
	}
	return in.agentCA(ctx, namespace)
}

func (in *installer) agentCA(ctx context.Context, namespace string) ([]byte, error) {
	cm, err := in.cs.CoreV1().ConfigMaps(namespace).Get(ctx, CAConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, &remote.Error{Kind: remote.NotInstalled, Err: err,
			Msg:  fmt.Sprintf("tp's CA (ConfigMap %s/%s) is missing: the manager was installed by a tp older than its TLS", namespace, CAConfigMap),
			Hint: "a cluster admin runs tp install again to make it"}
	case isContextErr(ctx, err):
		return nil, fmt.Errorf("read tp's CA: %w", err)
	case err != nil:
		return nil, APIError(Request{Host: in.host, Action: "read tp's CA", What: "get ConfigMap " + namespace + "/" + CAConfigMap, Needs: "get on ConfigMap " + CAConfigMap + " in tp's namespace (the tp-connect role)"}, err)
	}
	bundle := []byte(cm.Data[CABundleKey])
	if _, err := pki.Pool(bundle); err != nil {
		return nil, &remote.Error{Kind: remote.Cluster, Err: err,
			Msg:  fmt.Sprintf("ConfigMap %s/%s holds no usable CA bundle under %s", namespace, CAConfigMap, CABundleKey),
			Hint: "a cluster admin runs tp install again to write it"}
	}
	return bundle, nil
}
