package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/laptop/output"
)

// VersionConfig is tp version's configuration.
type VersionConfig struct {
	Image            string // the cluster image this tp installs by default
	ManagerNamespace string // where tp install put the manager ("" for deploy.DefaultNamespace)
	Output           string // text, json or yaml
	Timeout          time.Duration
}

// DefaultVersionTimeout bounds tp version's look at the cluster: an unreachable one must
// not hold a command that mostly prints what it knows.
const DefaultVersionTimeout = 5 * time.Second

// ShowVersion is tp version: this tp's build and, when the cluster answers, the manager's
// version and readiness, with a warning when the two cannot work together. An unreachable
// cluster is no failure: the manager is then unknown.
func (c *Client) ShowVersion(ctx context.Context, cfg VersionConfig) error {
	f, err := output.Parse(cfg.Output)
	if err != nil {
		return err
	}
	if cfg.ManagerNamespace == "" {
		cfg.ManagerNamespace = deploy.DefaultNamespace
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultVersionTimeout
	}
	v := output.Version{
		Header:  output.NewHeader(output.KindVersion),
		Client:  output.ClientVersion{Version: c.Version, Image: cfg.Image, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH},
		Manager: c.managerVersion(ctx, cfg.ManagerNamespace, cfg.Timeout),
	}
	if v.Manager.Error == "" {
		v.Manager.Skew, v.Manager.Note = Skew(c.Version, v.Manager.Version, cfg.ManagerNamespace)
	}
	if v.Manager.Skew != "" {
		fmt.Fprintf(c.Err, "tp: warning: %s\n", v.Manager.Skew)
	}
	if v.Manager.Note != "" {
		fmt.Fprintf(c.Err, "tp: note: %s\n", v.Manager.Note)
	}
	if f.Structured() {
		return output.Write(c.Out, f, v)
	}
	return writeVersionText(c.Out, v)
}

func writeVersionText(w io.Writer, v output.Version) error {
	cl, m := v.Client, v.Manager
	manager := ""
	switch {
	case m.Error != "":
		manager = "unknown (" + m.Error + ")"
	default:
		ready := "ready"
		if !m.Ready {
			ready = "not ready"
		}
		version := m.Version
		if version == "" {
			version = "of unknown version"
		}
		manager = fmt.Sprintf("%s in %s (image %s, %s)", version, m.Namespace, m.Image, ready)
	}
	_, err := fmt.Fprintf(w, "tp %s\ncluster image: %s\nbuilt with: %s %s/%s\nmanager: %s\n", cl.Version, cl.Image, cl.Go, cl.OS, cl.Arch, manager)
	return err
}

// managerVersion reads the manager's Deployment in namespace, within timeout.
func (c *Client) managerVersion(ctx context.Context, namespace string, timeout time.Duration) output.ManagerVersion {
	m := output.ManagerVersion{Namespace: namespace}
	k, err := c.cluster()
	if err != nil {
		m.Error = "cannot reach the cluster: " + err.Error()
		return m
	}
	in := *k
	in.REST = rest.CopyConfig(k.REST)
	in.REST.Timeout = timeout
	cs, err := c.kubeClient(&in)
	if err != nil {
		m.Error = "cannot reach the cluster: " + err.Error()
		return m
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dep, err := cs.AppsV1().Deployments(namespace).Get(ctx, deploy.ManagerName, metav1.GetOptions{})
	var status apierrors.APIStatus
	switch {
	case apierrors.IsNotFound(err):
		m.Error = fmt.Sprintf("tp is not installed in namespace %s (tp install installs it)", namespace)
		return m
	case errors.As(err, &status):
		m.Error = fmt.Sprintf("cannot read Deployment %s in namespace %s: %v", deploy.ManagerName, namespace, err)
		return m
	case err != nil:
		m.Error = "cannot reach the cluster: " + err.Error()
		return m
	case dep.Labels[deploy.ManagedByLabel] != deploy.ManagedByValue:
		m.Error = fmt.Sprintf("Deployment %s in namespace %s is not tp's (no %s=%s label)", deploy.ManagerName, namespace, deploy.ManagedByLabel, deploy.ManagedByValue)
		return m
	}
	m.Image = managerImage(dep)
	m.Version = imageTag(m.Image)
	m.Ready = deploymentReady(dep)
	return m
}

// managerImage is the image of the manager's container.
func managerImage(dep *appsv1.Deployment) string {
	cs := dep.Spec.Template.Spec.Containers
	for _, c := range cs {
		if c.Name == deploy.ManagerContainer {
			return c.Image
		}
	}
	if len(cs) > 0 {
		return cs[0].Image
	}
	return ""
}

// imageTag is the tag of an image reference: tp's images are tagged with the version of
// the tp that built them. "" for none (a digest alone, or no tag).
func imageTag(image string) string {
	image, _, _ = strings.Cut(image, "@")
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return "" // no tag, or the colon of a registry's port
	}
	return image[i+1:]
}

// deploymentReady: the current revision is rolled out (the controller has seen the spec,
// every desired pod runs it) and is available.
func deploymentReady(dep *appsv1.Deployment) bool {
	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	st := dep.Status
	return want > 0 && st.ObservedGeneration >= dep.Generation && st.UpdatedReplicas >= want && st.AvailableReplicas >= want
}

// releaseRE matches a release's tag (v1.2.3, v1.2.3-rc.1), not a git description of a
// commit past one (v1.2.3-4-gabcdef0) or a dirty tree.
var releaseRE = regexp.MustCompile(`^v(\d+)\.(\d+)\.\d+(?:-[0-9A-Za-z.]+)?$`)

// Skew is the one rule of which managers a tp works with: of two releases, the same major
// and minor version (patches mix freely); a development build (dev, a git description)
// only notes a difference from the other's exact version, as it cannot tell. skew says
// why they cannot work together and which command fixes it; note is a difference tp can
// live with or cannot judge. Both are "" when the versions agree, or one is unknown.
func Skew(tpVersion, managerVersion, namespace string) (skew, note string) {
	if tpVersion == "" || managerVersion == "" || tpVersion == managerVersion {
		return "", ""
	}
	install := "tp install"
	if namespace != deploy.DefaultNamespace {
		install += " -n " + namespace
	}
	t, m := release(tpVersion), release(managerVersion)
	if t == nil || m == nil {
		return "", fmt.Sprintf("the manager in %s is %s, this tp is %s: a development build cannot tell whether they work together; %s installs this tp's own",
			namespace, managerVersion, tpVersion, install)
	}
	if t[1] == m[1] && t[2] == m[2] {
		return "", ""
	}
	if older(m, t) {
		return fmt.Sprintf("the manager in %s is %s, this tp is %s: run %s to upgrade it (or use tp v%s.%s.x)",
			namespace, managerVersion, tpVersion, install, m[1], m[2]), ""
	}
	return fmt.Sprintf("the manager in %s is %s, newer than this tp (%s): use tp v%s.%s.x (or run %s to put this tp's back)",
		namespace, managerVersion, tpVersion, m[1], m[2], install), ""
}

// release is a release tag's submatches (major at 1, minor at 2); nil for anything else.
func release(v string) []string {
	if strings.HasSuffix(v, "-dirty") {
		return nil
	}
	return releaseRE.FindStringSubmatch(v)
}

// older says whether release a's major.minor comes before b's.
func older(a, b []string) bool {
	num := func(s string) int { n, _ := strconv.Atoi(s); return n }
	am, an, bm, bn := num(a[1]), num(a[2]), num(b[1]), num(b[2])
	return am < bm || am == bm && an < bn
}
