package deploy

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/managerspec"
)

// Names, labels and ports of the installed manager. The laptop side finds the manager's pod
// with them.
const (
	DefaultNamespace = "tp-system"
	// ManagerName names the Deployment, its Service and its ServiceAccount.
	ManagerName = managerspec.Name
	// ManagerContainer is the manager's container in the pod.
	ManagerContainer = "manager"
	// ManagerLabelSelector selects the manager's pods (and its Deployment and Service) in the
	// install namespace.
	ManagerLabelSelector = managerspec.Selector
	// The ports, the TLS mount and the environment are the manager's contract, which
	// tp-cluster reads too: managerspec has them; they are named here as well for the
	// laptop side, which finds the manager through deploy.
	ClientPort      = managerspec.ClientPort
	ClusterPort     = managerspec.ClusterPort
	ClusterPortName = managerspec.ClusterPortName
	TLSDir          = managerspec.TLSDir
	// FieldManager is tp's name in server-side apply.
	FieldManager = "tp"

	// ManagedByLabel marks every object tp installs; InstanceLabel carries the install
	// namespace, so objects outside it (cluster RBAC, Roles in managed namespaces) can be
	// found again by uninstall.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "tp"
	InstanceLabel  = "app.kubernetes.io/instance"
	// HashAnnotation on the pod template holds a digest of the rendered manifest: a change
	// of image, options or manifest rolls the manager; re-installing the same does not.
	HashAnnotation = "tp.dev/config-hash"

	// The manager's environment, from managerspec: it tells the manager which namespaces
	// it may see and which ranges beyond the cluster's it may dial.
	ManagedNamespacesEnv = managerspec.ManagedNamespacesEnv
	AllowedCIDRsEnv      = managerspec.AllowedCIDRsEnv

	// AgentRecordLabel marks a Lease as a tp agent record, and AgentRecordPrefix starts its
	// name, tp-agent.<resource>.<name>; intercept writes records by them. The record
	// admission policy selects Leases by the one and reads the workload out of the name by
	// the other.
	AgentRecordLabel  = "tp.dev/agent-record"
	AgentRecordPrefix = "tp-agent."
	// WebhookName and WebhookPath: the pod webhook of the MutatingWebhookConfiguration
	// (named RBACName), served by the manager on its cluster port.
	WebhookName = managerspec.WebhookName
	WebhookPath = managerspec.WebhookPath

	// DefaultTimeout bounds the wait for the manager to be ready (or gone, on uninstall).
	DefaultTimeout = 2 * time.Minute
)

// RBACName names the ClusterRole and ClusterRoleBinding of the install in namespace, and the
// Roles and RoleBindings in its managed namespaces: installs in two namespaces never collide.
func RBACName(namespace string) string { return ManagerName + "-" + namespace }

// ClaimsRoleName names the Role (and its binding) in tp's namespace that lets the manager's
// pods share their intercepts (claims).
const ClaimsRoleName = ManagerName + "-claims"

// RecordPolicyName names the admission policy (and its binding) for agent records of the
// install in namespace; the grant policy is named RBACName.
func RecordPolicyName(namespace string) string { return RBACName(namespace) + "-agent-records" }

// Options says what to install and how to report on it.
type Options struct {
	// Namespace of the manager; default DefaultNamespace.
	Namespace string
	// Image of the manager (tp's cluster image). Required for Install and Render.
	Image string
	// ManagedNamespaces limits what the manager may see of workloads (services, pods,
	// endpoints) to these namespaces, with a Role in each. Empty: the whole cluster.
	ManagedNamespaces []string
	// AllowedCIDRs are ranges beyond the cluster's service and pod ranges that the manager
	// may dial for clients (its dial policy); link-local and loopback addresses never are.
	AllowedCIDRs []string
	// Timeout bounds the wait for the manager to be ready, or for it to be gone on
	// uninstall; default DefaultTimeout.
	Timeout time.Duration
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// RotateCA makes Install replace the CA agents verify the manager by (see CASecret).
	RotateCA bool
	// Replicas is how many manager pods serve the team (each developer's session and the
	// intercepts it holds live on one; agents connect to all); 0: as many as now (1 for a
	// new install).
	Replicas int
}

// MaxReplicas bounds tp install --replicas: each replica costs every agent a connection.
const MaxReplicas = 10

// ClientRoles is client-roles.yaml: the ClusterRoles tp-connect and tp-intercept that give
// developers what tp needs (README's "Rights"), to bind with RoleBindings.
//
//go:embed client-roles.yaml
var ClientRoles string

//go:embed manager.yaml
var managerTemplate string

// tmpl is parsed once: it is constant, and a parse error is a bug caught by every test.
var tmpl = template.Must(template.New("manager.yaml").Funcs(template.FuncMap{
	"quote":  quote,
	"labels": labelLines,
}).Parse(managerTemplate))

// withDefaults fills in defaults and checks the options. Errors are Usage errors.
func (o Options) withDefaults(needImage bool) (Options, error) {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Replicas < 0 || o.Replicas > MaxReplicas {
		return o, remote.Explain(remote.Usage, fmt.Sprintf("%d manager replicas: tp runs 1 to %d", o.Replicas, MaxReplicas),
			"pass --replicas 2 or 3 for a team that must not notice a manager rollout or a node drain")
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return o, remote.Explain(remote.Usage, fmt.Sprintf("namespace %q is not a valid namespace name: %s", o.Namespace, strings.Join(errs, "; ")),
			"pass a lowercase name of letters, digits and '-', like "+DefaultNamespace)
	}
	var managed []string
	for _, ns := range o.ManagedNamespaces {
		ns = strings.TrimSpace(ns)
		if ns == "" {
			continue
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return o, remote.Explain(remote.Usage, fmt.Sprintf("managed namespace %q is not a valid namespace name: %s", ns, strings.Join(errs, "; ")),
				"pass existing namespaces, comma separated: --managed-namespaces a,b")
		}
		managed = append(managed, ns)
	}
	// Sorted, so the same set always renders (and hashes) the same.
	slices.Sort(managed)
	o.ManagedNamespaces = slices.Compact(managed)
	allowed, err := managerspec.ParseAllowedCIDRs(o.AllowedCIDRs...)
	if err != nil {
		return o, remote.Explain(remote.Usage, err.Error(), "pass ranges outside link-local and loopback, comma separated: --allow-cidr 10.0.0.0/8,192.0.2.7/32")
	}
	// Canonical and sorted (ParseAllowedCIDRs sorts), so the same set renders the same.
	o.AllowedCIDRs = nil
	for _, p := range allowed {
		o.AllowedCIDRs = append(o.AllowedCIDRs, p.String())
	}
	if needImage {
		if o.Image == "" {
			return o, remote.Explain(remote.Usage, "no manager image given", "pass --image (tp version prints the image this tp installs by default)")
		}
		if _, err := name.ParseReference(o.Image); err != nil || strings.TrimSpace(o.Image) != o.Image {
			if err == nil {
				err = fmt.Errorf("surrounding white space")
			}
			return o, &remote.Error{Kind: remote.Usage, Msg: fmt.Sprintf("manager image %q is not a valid image reference", o.Image),
				Hint: "pass --image like registry.example.com/tp/tp:v1.2.3", Err: err}
		}
	}
	return o, nil
}

type manifestData struct {
	Namespace         string
	Image             string
	ManagedNamespaces []string
	ManagedList       string
	AllowedList       string
	ConfigHash        string
	// CABundle is base64 of tp's CA bundle, the webhook's caBundle; "" (no cluster, as for
	// --dry-run) leaves it out, with a comment saying where it comes from.
	CABundle string
	// WebhookNamespaces are those the pod webhook is called for (the managed ones but the
	// install's own); WebhookExcluded those it never is when all are managed.
	WebhookNamespaces, WebhookExcluded []string

	Name, Container, RBACName, ClusterPortName, HashAnnotation, GrantLabel, TLSSecret, TLSDir string
	RecordPolicyName, RecordLabel, RecordPrefix, WebhookName, WebhookPath                     string
	ClientPort, ClusterPort, Replicas                                                         int
	PodsService, ClaimsRole                                                                   string
}

// Render returns the manager's manifest for opts (defaults applied): multi-document YAML, in
// the order it must be applied. It is what Install applies, and what --dry-run shows, but
// for the pod webhook's caBundle: tp's CA is made by Install, in the cluster, so Render
// leaves it out (a comment says so) where Install puts the CA bundle in.
func Render(opts Options) ([]byte, error) {
	opts, err := opts.withDefaults(true)
	if err != nil {
		return nil, err
	}
	opts.Replicas = max(opts.Replicas, 1)
	return render(opts, "", nil)
}

// render renders the manifest; certFingerprint (of the manager's server certificate, which
// is not in the manifest) goes into the config hash, so that a new certificate restarts
// the manager. caBundle (PEM, as ConfigMap tp-ca holds it) is the pod webhook's; nil leaves
// it out.
func render(opts Options, certFingerprint string, caBundle []byte) ([]byte, error) {
	var webhookNS []string
	for _, n := range opts.ManagedNamespaces {
		if n != opts.Namespace {
			webhookNS = append(webhookNS, n)
		}
	}
	excluded := []string{opts.Namespace}
	if opts.Namespace != "kube-system" {
		excluded = append(excluded, "kube-system")
	}
	var bundle string
	if len(caBundle) > 0 {
		bundle = base64.StdEncoding.EncodeToString(caBundle)
	}
	d := manifestData{
		CABundle:          bundle,
		WebhookNamespaces: webhookNS,
		WebhookExcluded:   excluded,
		RecordPolicyName:  RecordPolicyName(opts.Namespace),
		RecordLabel:       AgentRecordLabel,
		RecordPrefix:      AgentRecordPrefix,
		WebhookName:       WebhookName,
		WebhookPath:       WebhookPath,
		Namespace:         opts.Namespace,
		Image:             opts.Image,
		ManagedNamespaces: opts.ManagedNamespaces,
		ManagedList:       strings.Join(opts.ManagedNamespaces, ","),
		AllowedList:       strings.Join(opts.AllowedCIDRs, ","),
		Name:              ManagerName,
		Container:         ManagerContainer,
		RBACName:          RBACName(opts.Namespace),
		ClusterPortName:   ClusterPortName,
		HashAnnotation:    HashAnnotation,
		GrantLabel:        grant.Label,
		ClientPort:        ClientPort,
		ClusterPort:       ClusterPort,
		Replicas:          opts.Replicas,
		PodsService:       ManagerName + agentspec.PodsServiceSuffix,
		ClaimsRole:        ClaimsRoleName,
		TLSSecret:         TLSSecret,
		TLSDir:            TLSDir,
	}
	// The hash covers everything rendered but itself: render once without it.
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("render manager manifest: %w", err)
	}
	buf.WriteString("\ncertificate " + certFingerprint)
	sum := sha256.Sum256(buf.Bytes())
	d.ConfigHash = hex.EncodeToString(sum[:8])
	buf.Reset()
	if err := tmpl.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("render manager manifest: %w", err)
	}
	return buf.Bytes(), nil
}

// quote makes s a YAML scalar that is read back as exactly s (JSON strings are YAML).
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// labelLines are the labels every installed object carries, as YAML map lines indented by
// indent spaces.
func labelLines(indent int, namespace string) string {
	pad := strings.Repeat(" ", indent)
	return pad + ManagedByLabel + ": " + ManagedByValue + "\n" +
		pad + "app.kubernetes.io/part-of: tp\n" +
		pad + InstanceLabel + ": " + quote(namespace)
}

// instanceSelector selects every object of the install in namespace.
func instanceSelector(namespace string) string {
	return ManagedByLabel + "=" + ManagedByValue + "," + InstanceLabel + "=" + namespace
}
