package kit

import (
	"context"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/tpdev/tp/deploy"
)

// ApplyClientRoles creates (or updates) the ClusterRoles of deploy/client-roles.yaml.
func ApplyClientRoles(t testing.TB, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	for doc := range strings.SplitSeq(deploy.ClientRoles, "\n---\n") {
		var cr rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict([]byte(doc), &cr); err != nil {
			t.Fatalf("client-roles.yaml: %v", err)
		}
		old, err := cs.RbacV1().ClusterRoles().Get(ctx, cr.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, &cr, metav1.CreateOptions{})
		case err == nil:
			cr.ResourceVersion = old.ResourceVersion
			_, err = cs.RbacV1().ClusterRoles().Update(ctx, &cr, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatalf("ClusterRole %s: %v", cr.Name, err)
		}
	}
}

// DeveloperToken makes a developer: a ServiceAccount name in ns, bound as README says to
// roles (tp-connect in tp's namespace, the others in ns), and returns a token of it.
func DeveloperToken(t testing.TB, cs kubernetes.Interface, ns, name string, roles ...string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, role := range roles {
		where := ns
		if role == "tp-connect" {
			where = deploy.DefaultNamespace
		}
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + role, Namespace: where},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
		}
		if _, err := cs.RbacV1().RoleBindings(where).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if where != ns {
			t.Cleanup(func() {
				_ = cs.RbacV1().RoleBindings(where).Delete(context.Background(), rb.Name, metav1.DeleteOptions{})
			})
		}
	}
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Status.Token
}
