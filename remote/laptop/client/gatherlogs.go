package client

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

// GatherConfig is tp gather-logs's configuration.
type GatherConfig struct {
	// Output is the archive; "" for tp-logs-YYYYMMDD-HHMMSS.tar.gz in the current folder.
	Output string
	// Name is the only session to gather; "" for every one.
	Name string
	// ManagerNamespace is the manager's; "" for the running sessions' (else tp's default).
	ManagerNamespace string
	// Image is the cluster image this tp installs.
	Image string
	// Args are the command's arguments: it takes none.
	Args []string
}

const (
	// gatherLogBytes bounds each log in the archive: its last bytes are kept.
	gatherLogBytes = 5 << 20
	// gatherTailLines bounds what is read of a container's log.
	gatherTailLines = 100_000
	// gatherAPITimeout bounds each Kubernetes API request.
	gatherAPITimeout = 30 * time.Second
)

// GatherLogs is tp gather-logs: one .tar.gz of what a bug report needs, every part
// best-effort (errors.txt in it says which parts failed, and why), every byte redacted.
func (c *Client) GatherLogs(ctx context.Context, cfg GatherConfig) error {
	if len(cfg.Args) > 0 {
		return remote.Errorf(remote.Usage, "tp gather-logs takes no arguments, got %q", cfg.Args)
	}
	if cfg.Name != "" {
		if dir, err := control.Dir(cfg.Name); err != nil {
			return err
		} else if _, err := os.Stat(dir); err != nil {
			return remote.Errorf(remote.Usage, "no session named %q on this machine (tp status lists the running ones)", cfg.Name)
		}
	}
	now := time.Now()
	stamp := "tp-logs-" + now.Format("20060102-150405")
	out := cmp.Or(cfg.Output, stamp+".tar.gz")
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return remote.Errorf(remote.Usage, "the archive: %v", err)
	}
	a := newArchive(f, stamp, now)
	infos := a.sessions(ctx, cfg.Name)
	cluster := c.gatherCluster(ctx, a, cfg, infos)
	a.add("versions.txt", versions(c.Version, cfg.Image, infos, cluster))
	if err := errors.Join(a.close(), f.Close()); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	if len(a.errs) > 0 {
		fmt.Fprintf(c.Err, "tp: not everything could be gathered (%d parts): errors.txt in the archive says why\n", len(a.errs))
	}
	fmt.Fprintln(c.Out, out)
	return nil
}

// archive is the .tar.gz being written: every file under dir, redacted.
type archive struct {
	gz   *gzip.Writer
	tw   *tar.Writer
	dir  string
	at   time.Time
	err  error    // the first write error: the archive is broken
	errs []string // the parts that failed
}

func newArchive(w io.Writer, dir string, at time.Time) *archive {
	gz := gzip.NewWriter(w)
	return &archive{gz: gz, tw: tar.NewWriter(gz), dir: dir, at: at}
}

// add writes one file of the archive, redacted.
func (a *archive) add(name string, data []byte) {
	if a.err != nil {
		return
	}
	data = redact(data)
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: a.dir + "/" + name, Mode: 0o600, Size: int64(len(data)), ModTime: a.at}
	if a.err = a.tw.WriteHeader(hdr); a.err == nil {
		_, a.err = a.tw.Write(data)
	}
}

// fail records a part that could not be gathered.
func (a *archive) fail(part string, err error) {
	a.errs = append(a.errs, part+": "+err.Error())
}

// close writes errors.txt and ends the archive.
func (a *archive) close() error {
	text := "every part was gathered\n"
	if len(a.errs) > 0 {
		text = strings.Join(a.errs, "\n") + "\n"
	}
	a.add("errors.txt", []byte(text))
	return errors.Join(a.err, a.tw.Close(), a.gz.Close())
}

// sessions adds each session's daemon logs (current and older), and the status of those
// running; it returns their statuses.
func (a *archive) sessions(ctx context.Context, name string) []control.Info {
	names := []string{name}
	if name == "" {
		var err error
		if names, err = control.Names(); err != nil {
			a.fail("sessions", err)
		}
	}
	var infos []control.Info
	for _, n := range names {
		logPath, err := control.LogPath(n)
		if err != nil {
			a.fail("session "+n, err)
			continue
		}
		for i := 0; i <= logKeep; i++ {
			p := oldLog(logPath, i)
			data, err := readFileTail(p, 2*logMaxSize)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				a.fail("session "+n+" log "+p, err)
			}
			a.add("sessions/"+n+"/"+filepath.Base(p), data)
		}
		info, err := control.Status(ctx, n)
		if err != nil {
			if name != "" {
				a.fail("session "+n+" status", err)
			}
			continue
		}
		data, _ := json.MarshalIndent(info, "", "  ")
		a.add("sessions/"+n+"/status.json", append(data, '\n'))
		infos = append(infos, info)
	}
	return infos
}

func readFileTail(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readTail(f, limit)
}

// readTail reads r to its end and returns its last limit bytes (less the cut line).
func readTail(r io.Reader, limit int) ([]byte, error) {
	var buf []byte
	chunk := make([]byte, 64<<10)
	cut := false
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if len(buf) > 2*limit {
			buf, cut = append(buf[:0], buf[len(buf)-limit:]...), true
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return tailOf(buf, limit, cut), err
		}
	}
	return tailOf(buf, limit, cut), nil
}

// tailOf is buf's last limit bytes from a line's start (a cut line could hide half of a
// secret from the redactor), marked as cut.
func tailOf(buf []byte, limit int, cut bool) []byte {
	if len(buf) > limit {
		buf, cut = buf[len(buf)-limit:], true
	}
	if !cut {
		return buf
	}
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		buf = buf[i+1:]
	}
	return append([]byte(fmt.Sprintf("[tp gather-logs: cut, the last %d bytes follow]\n", limit)), buf...)
}

// gatherCluster adds the manager's and the intercepted workloads' agents' pods, logs and
// events, through the cluster of the sessions (the kubeconfig's when none runs or
// --context says); it returns the API server's version.
func (c *Client) gatherCluster(ctx context.Context, a *archive, cfg GatherConfig, infos []control.Info) string {
	if c.Kube.Context == "" && len(infos) > 0 {
		c.Kube.Context = infos[0].Context
	}
	k, err := c.cluster()
	if err != nil {
		a.fail("the cluster's parts", err)
		return ""
	}
	var here []control.Info
	for _, info := range infos {
		if info.Context != k.Context || info.Cluster != k.Cluster {
			a.fail("session "+info.Name+"'s cluster", fmt.Errorf("it is connected to context %q, not %q: tp gather-logs --context %s --name %s gathers it", info.Context, k.Context, info.Context, info.Name))
			continue
		}
		here = append(here, info)
	}
	bounded := *k
	bounded.REST = rest.CopyConfig(k.REST)
	bounded.REST.Timeout = gatherAPITimeout
	cs, err := c.kubeClient(&bounded)
	if err != nil {
		a.fail("the cluster's parts", err)
		return ""
	}
	version := "unknown"
	if v, err := cs.Discovery().ServerVersion(); err == nil {
		version = v.GitVersion
	} else if st := apierrors.APIStatus(nil); !errors.As(err, &st) {
		a.fail("the cluster's parts (context "+k.Context+")", fmt.Errorf("the API server does not answer: %w", err))
		return ""
	} else {
		a.fail("kubernetes version", err)
	}
	g := &gatherer{a: a, cs: cs, listed: map[string]*corev1.EventList{}}
	for _, ns := range managerNamespaces(cfg.ManagerNamespace, here) {
		g.manager(ctx, ns)
	}
	for _, ref := range intercepted(here) {
		g.workload(ctx, ref)
	}
	return fmt.Sprintf("%s (context %s, %s)", version, k.Context, k.Cluster)
}

// managerNamespaces are the one given, else the sessions', else tp's default.
func managerNamespaces(given string, infos []control.Info) []string {
	if given != "" {
		return []string{given}
	}
	var out []string
	for _, info := range infos {
		if ns := info.ManagerNamespace; ns != "" && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	if len(out) == 0 {
		out = []string{deploy.DefaultNamespace}
	}
	return out
}

// intercepted are the workloads the sessions hold intercepts of, each once.
func intercepted(infos []control.Info) []session.InterceptSpec {
	var out []session.InterceptSpec
	for _, info := range infos {
		var st session.Status
		_ = json.Unmarshal(info.Session, &st)
		for _, it := range st.Intercepts {
			if !slices.ContainsFunc(out, func(o session.InterceptSpec) bool {
				return o.Namespace == it.Namespace && o.Kind == it.Kind && o.Workload == it.Workload
			}) {
				out = append(out, it)
			}
		}
	}
	return out
}

// versions is versions.txt.
func versions(client, image string, infos []control.Info, cluster string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "tp (this command): %s\ncluster image: %s\nbuilt with: %s %s/%s\n", client, image, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if cluster != "" {
		fmt.Fprintf(&b, "kubernetes: %s\n", cluster)
	}
	for _, info := range infos {
		var st session.Status
		_ = json.Unmarshal(info.Session, &st)
		fmt.Fprintf(&b, "session %s: daemon tp %s (pid %d); manager %s in %s (pod %s)\n", info.Name, info.Version, info.PID, st.ManagerVersion, info.ManagerNamespace, st.ManagerPod)
	}
	return b.Bytes()
}

// gatherer adds the cluster's parts.
type gatherer struct {
	a      *archive
	cs     kubernetes.Interface
	listed map[string]*corev1.EventList // each namespace's events, listed once (nil: they could not be)
}

// manager adds the manager's pods (every container's log, and the previous one's of a
// restarted container) and the events of its Deployment, ReplicaSets and pods.
func (g *gatherer) manager(ctx context.Context, ns string) {
	dir := "manager/" + ns
	if d, err := g.cs.AppsV1().Deployments(ns).Get(ctx, deploy.ManagerName, metav1.GetOptions{}); err != nil {
		g.a.fail("deployment "+ns+"/"+deploy.ManagerName, err)
	} else {
		data, _ := json.MarshalIndent(d.Status, "", "  ")
		g.a.add(dir+"/deployment-status.json", append(data, '\n'))
	}
	pods := g.pods(ctx, ns, deploy.ManagerLabelSelector, dir, "")
	g.events(ctx, ns, dir, func(o corev1.ObjectReference) bool {
		return o.Name == deploy.ManagerName || strings.HasPrefix(o.Name, deploy.ManagerName+"-") || slices.Contains(pods, o.Name)
	})
}

// workload adds the intercepted workload's pods' agent logs, and the events of the
// workload, its ReplicaSets and pods.
func (g *gatherer) workload(ctx context.Context, it session.InterceptSpec) {
	kind := strings.ToLower(it.Kind)
	dir := fmt.Sprintf("agents/%s/%s-%s", it.Namespace, kind, it.Workload)
	sel, err := g.selector(ctx, it.Namespace, kind, it.Workload)
	var pods []string
	if err != nil {
		g.a.fail(fmt.Sprintf("%s %s/%s", kind, it.Namespace, it.Workload), err)
	} else {
		pods = g.pods(ctx, it.Namespace, sel, dir, agentspec.Container)
	}
	g.events(ctx, it.Namespace, dir, func(o corev1.ObjectReference) bool {
		return o.Name == it.Workload || (o.Kind == "ReplicaSet" && strings.HasPrefix(o.Name, it.Workload+"-")) || slices.Contains(pods, o.Name)
	})
}

// selector is the label selector of the workload's pods.
func (g *gatherer) selector(ctx context.Context, ns, kind, name string) (string, error) {
	var sel *metav1.LabelSelector
	var err error
	switch kind {
	case "deployment":
		d, e := g.cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err = e; err == nil {
			sel = d.Spec.Selector
		}
	case "statefulset":
		ss, e := g.cs.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err = e; err == nil {
			sel = ss.Spec.Selector
		}
	case "replicaset":
		rs, e := g.cs.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err = e; err == nil {
			sel = rs.Spec.Selector
		}
	default:
		return "", fmt.Errorf("tp does not know workloads of kind %q", kind)
	}
	if err != nil {
		return "", err
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "", err
	}
	return s.String(), nil
}

// pods adds pods.txt (each pod's phase, containers, images, restarts) and the logs of
// container (every container when "") of each pod selected; it returns the pods' names.
func (g *gatherer) pods(ctx context.Context, ns, selector, dir, container string) []string {
	list, err := g.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		g.a.fail(fmt.Sprintf("pods in %s (%s)", ns, selector), err)
		return nil
	}
	var b bytes.Buffer
	var names []string
	for _, p := range list.Items {
		names = append(names, p.Name)
		fmt.Fprintf(&b, "%s: %s, node %s, started %s\n", p.Name, podState(&p), p.Spec.NodeName, p.CreationTimestamp.Format(time.RFC3339))
		statuses := append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...)
		for _, cs := range statuses {
			fmt.Fprintf(&b, "  %s: %s, ready %t, restarts %d, %s\n", cs.Name, cs.Image, cs.Ready, cs.RestartCount, containerState(cs))
		}
		found := false
		for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
			if container != "" && c.Name != container {
				continue
			}
			found = true
			g.log(ctx, &p, c.Name, false, fmt.Sprintf("%s/%s/%s.log", dir, p.Name, c.Name))
			if i := slices.IndexFunc(statuses, func(s corev1.ContainerStatus) bool { return s.Name == c.Name }); i >= 0 && statuses[i].RestartCount > 0 {
				g.log(ctx, &p, c.Name, true, fmt.Sprintf("%s/%s/%s.previous.log", dir, p.Name, c.Name))
			}
		}
		if !found {
			fmt.Fprintf(&b, "  (no %s container: this pod runs without tp's agent)\n", container)
		}
	}
	if len(list.Items) == 0 {
		fmt.Fprintf(&b, "no pods in %s match %s\n", ns, selector)
	}
	g.a.add(dir+"/pods.txt", b.Bytes())
	return names
}

func podState(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return string(p.Status.Phase) + " (terminating)"
	}
	return cmp.Or(string(p.Status.Phase), "Unknown")
}

func containerState(cs corev1.ContainerStatus) string {
	switch s := cs.State; {
	case s.Running != nil:
		return "running since " + s.Running.StartedAt.Format(time.RFC3339)
	case s.Waiting != nil:
		return "waiting: " + s.Waiting.Reason + " " + s.Waiting.Message
	case s.Terminated != nil:
		return fmt.Sprintf("terminated: %s, exit %d", s.Terminated.Reason, s.Terminated.ExitCode)
	}
	return "unknown state"
}

// log adds a container's log (its last gatherLogBytes, of at most gatherTailLines lines).
func (g *gatherer) log(ctx context.Context, p *corev1.Pod, container string, previous bool, name string) {
	lines := int64(gatherTailLines)
	part := fmt.Sprintf("log of %s/%s container %s", p.Namespace, p.Name, container)
	if previous {
		part = "previous " + part
	}
	rc, err := g.cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container, Previous: previous, Timestamps: true, TailLines: &lines}).Stream(ctx)
	if err != nil {
		g.a.fail(part, err)
		return
	}
	defer rc.Close()
	data, err := readTail(rc, gatherLogBytes)
	if err != nil {
		g.a.fail(part, err)
	}
	g.a.add(name, data)
}

// events adds events.txt: the namespace's events about what match chooses, oldest first.
func (g *gatherer) events(ctx context.Context, ns, dir string, match func(corev1.ObjectReference) bool) {
	list, listed := g.listed[ns]
	if !listed {
		var err error
		if list, err = g.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err != nil {
			g.a.fail("events in "+ns, err)
			list = nil
		}
		g.listed[ns] = list
	}
	if list == nil {
		return
	}
	var evs []corev1.Event
	for _, e := range list.Items {
		if match(e.InvolvedObject) {
			evs = append(evs, e)
		}
	}
	at := func(e corev1.Event) time.Time {
		for _, t := range []time.Time{e.LastTimestamp.Time, e.EventTime.Time, e.FirstTimestamp.Time} {
			if !t.IsZero() {
				return t
			}
		}
		return e.CreationTimestamp.Time
	}
	slices.SortStableFunc(evs, func(x, y corev1.Event) int { return at(x).Compare(at(y)) })
	var b bytes.Buffer
	for _, e := range evs {
		fmt.Fprintf(&b, "%s %s %s %s/%s: %s", at(e).Format(time.RFC3339), e.Type, e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, strings.TrimSpace(e.Message))
		if e.Count > 1 {
			fmt.Fprintf(&b, " (x%d)", e.Count)
		}
		b.WriteByte('\n')
	}
	if len(evs) == 0 {
		b.WriteString("no recent events\n")
	}
	g.a.add(dir+"/events.txt", b.Bytes())
}

// The redactor's rules: what a log or a status may hold that must not leave the machine.
var (
	// scheme://user:PASSWORD@ (a proxy's credentials in its URL).
	urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s"']*):[^@\s"']+@`)
	// Authorization: and Proxy-Authorization: values, the scheme's name kept: a quoted one
	// (JSON, a log's quoted value) to its closing quote (an escaped opening quote: to the
	// first unescaped one, the end of the log's value), one in Go's %v of a header map to
	// its ], else (a header line) to the line's end.
	authHeader = regexp.MustCompile(`(?i)(\b(?:proxy-)?authorization\b\\?["']?\s*[:=]\s*)(?:` +
		`(\[?\\?")(` + authScheme + `)?(?:[^"\\\r\n]|\\.)*|` +
		`(\[?')(` + authScheme + `)?(?:[^'\\\r\n]|\\.)*|` +
		`(\[)(` + authScheme + `)?[^\]\r\n]*|` +
		`(` + authScheme + `)?[^\r\n]*)`)
	// Bearer TOKEN anywhere.
	bearer = regexp.MustCompile(`(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*`)
	// JWTs (base64 of {"...), service-account tokens among them.
	jwt = regexp.MustCompile(`eyJ[A-Za-z0-9_\-+/=]{6,}(?:\.[A-Za-z0-9_\-+/=]*){0,2}`)
	// TP_PROXY_CREDENTIALS=... and TP_UPSTREAM_PROXY=...: the value to the line's end, or
	// its closing quote.
	tpSecretVar = regexp.MustCompile(`(?i)\b((?:` + CredentialsEnv + `|` + UpstreamProxyEnv + `)\\?["']?\s*[=:]\s*)(?:\\?"[^"\r\n]*"?|'[^'\r\n]*'?|[^\r\n]*)`)
)

// authScheme is an Authorization value's first word.
const authScheme = `(?:basic|bearer|digest|negotiate|ntlm|aws4-hmac-sha256)\s+`

// redacted replaces what the redactor removes.
const redacted = "xxxxx"

// redact removes from data the secrets tp's logs and statuses may hold: passwords in URLs,
// Authorization and Proxy-Authorization values, bearer tokens and JWTs, and the values of
// TP_PROXY_CREDENTIALS and TP_UPSTREAM_PROXY.
func redact(data []byte) []byte {
	data = tpSecretVar.ReplaceAll(data, []byte("${1}"+redacted))
	data = authHeader.ReplaceAll(data, []byte("${1}${2}${3}${4}${5}${6}${7}${8}"+redacted))
	data = bearer.ReplaceAll(data, []byte("${1}"+redacted))
	data = jwt.ReplaceAll(data, []byte(redacted))
	return urlPassword.ReplaceAll(data, []byte("${1}:"+redacted+"@"))
}
