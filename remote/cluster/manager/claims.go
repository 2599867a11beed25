package manager

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/grant"
	"github.com/tpdev/tp/remote/managerspec"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Claims make a port's intercepts one set across the manager's pods. Each pod keeps the
// intercepts of the clients connected to it in memory; what another pod may not do beside
// them (a second global intercept, a filtered one beside a global one, a taken id) it learns
// from a claim: a Lease in tp's namespace for each intercept, naming the pod that serves it.
//
// A pod writes its intercept's claim first and reads the port's claims after, so that of two
// pods making conflicting intercepts at once at least one sees the other (both may refuse:
// safe, and rare). A claim whose pod no longer exists counts for nothing; a client that
// asserts its intercept on another pod moves the claim there.
type Claims struct {
	CS kubernetes.Interface
	// Namespace is tp's (where the claims live), Pod this manager pod.
	Namespace, Pod string
	// Pods are the manager's pods.
	Pods *ManagerPods
	Log  *slog.Logger

	mu    sync.Mutex
	locks map[string]*claimLock
	// moveGrace is how long a gone pod's claim is left to its client to move; default
	// claimSweep.
	moveGrace time.Duration
}

// claimLock serializes the Takes and Releases of one claim on this pod; gen counts Takes,
// so that a Release decided before a Take (a leave, then the same intercept again) does not
// remove what that Take wrote.
type claimLock struct {
	sync.Mutex
	gen   atomic.Uint64
	taken time.Time // the last Take (under the lock)
}

func (cl *Claims) lock(name string) *claimLock {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.locks == nil {
		cl.locks = map[string]*claimLock{}
	}
	l := cl.locks[name]
	if l == nil {
		l = &claimLock{}
		cl.locks[name] = l
	}
	return l
}

// gen is the claim's generation now, for Release; it does not wait for a Take under way.
func (cl *Claims) gen(key interceptKey, grant string) uint64 {
	return cl.lock(claimName(key, grant)).gen.Load()
}

// claimWritten is when claim l was last written (its creation, or its last update).
func claimWritten(l *coordinationv1.Lease) time.Time {
	at := l.CreationTimestamp.Time
	for _, f := range l.ManagedFields {
		if f.Time != nil && f.Time.After(at) {
			at = f.Time.Time
		}
	}
	return at
}

// labelValue makes a pod's name a label's value (at most 63 characters, ending in a letter
// or digit).
func labelValue(s string) string {
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.TrimRight(s, "-.")
}

// ManagerPods is what a manager pod knows of its peers: which exist, and the agent API
// addresses of the ready ones. It reads them from the API server when asked, at most every
// podsFresh (sooner for a pod it does not know yet: a new one).
type ManagerPods struct {
	CS                  kubernetes.Interface
	Namespace, Selector string
	Port                string // the agent API's port

	mu    sync.Mutex
	at    time.Time
	names map[string]bool
	addrs map[string]string // by pod name
}

// read lists the pods if what it has is older than maxAge.
func (m *ManagerPods) read(ctx context.Context, maxAge time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.at.IsZero() && time.Since(m.at) <= maxAge {
		return nil
	}
	// The lock is held through the call: one list serves every caller waiting for it. A
	// deadline of its own keeps an API server that hangs from holding them all.
	ctx, cancel := context.WithTimeout(ctx, podsWait)
	defer cancel()
	list, err := m.CS.CoreV1().Pods(m.Namespace).List(ctx, metav1.ListOptions{LabelSelector: m.Selector})
	if err != nil {
		return fmt.Errorf("listing the manager's pods: %w", err) // not kept: the next caller asks again
	}
	m.at = time.Now()
	m.names, m.addrs = map[string]bool{}, map[string]string{}
	for _, p := range list.Items {
		m.names[p.Name] = true
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && podReady(&p) {
			m.addrs[p.Name] = net.JoinHostPort(p.Status.PodIP, m.Port)
		}
	}
	return nil
}

// Exists reports whether manager pod name exists (stopping or not).
func (m *ManagerPods) Exists(ctx context.Context, name string) (bool, error) {
	if err := m.read(ctx, podsFresh); err != nil {
		return false, err
	}
	m.mu.Lock()
	known := m.names[name]
	m.mu.Unlock()
	if known {
		return true, nil
	}
	if err := m.read(ctx, podsFresh/4); err != nil { // a new pod, perhaps
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.names[name], nil
}

// Ready is the agent API addresses of the ready manager pods but without, as read at most
// maxAge ago; none when they cannot be read.
func (m *ManagerPods) Ready(ctx context.Context, maxAge time.Duration, without string) []string {
	if m == nil || m.read(ctx, maxAge) != nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, addr := range m.addrs {
		if name != without {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

const (
	// ClaimLabel marks a claim; its value is a hash of the intercepted port.
	ClaimLabel = managerspec.ClaimLabel
	// claimAnnotation holds the claim (JSON).
	claimAnnotation = "tp.dev/claim"
	// claimPodLabel is the pod that wrote the claim, for its sweep.
	claimPodLabel = "tp.dev/claim-pod"
	// podsFresh is how long a list of the manager's pods is trusted; podsWait bounds
	// reading it.
	podsFresh = 2 * time.Second
	podsWait  = 5 * time.Second
)

// claim is what a Lease says of one intercept.
type claim struct {
	Pod     string        `json:"pod"`
	Name    string        `json:"name"`
	Holder  string        `json:"holder"`
	Client  string        `json:"client,omitempty"`
	Since   time.Time     `json:"since"`
	Wiretap bool          `json:"wiretap,omitempty"`
	Filter  *route.Filter `json:"filter,omitempty"` // nil: every connection
	// Key is the intercepted port (namespace, kind, workload, port) and Grant the grant's
	// name: what the pod that wrote the claim finds its intercept by.
	Key   []string `json:"key,omitempty"`
	Grant string   `json:"grant,omitempty"`
	// Hash is the grant's secret's hash: the client that holds the intercept.
	Hash string `json:"hash,omitempty"`
}

func (c claim) same(o claim) bool {
	return c.Pod == o.Pod && c.Name == o.Name && c.Holder == o.Holder && c.Wiretap == o.Wiretap && sameFilter(c.Filter, o.Filter)
}

// asIntercept is the claim as the registry's conflict checks read an intercept.
func (c claim) asIntercept(key interceptKey) *intercept {
	return &intercept{key: key, name: c.Name, filter: c.Filter, wiretap: c.Wiretap, holder: c.Holder, since: c.Since,
		client: &clientSession{who: c.Client}}
}

func hashOf(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func portHash(key interceptKey) string {
	return hashOf(key.namespace, key.kind, key.workload, key.port)[:40]
}

// claimName names the claim of the intercept of key that grant (a Lease's name in key's
// namespace) allows: the same on every pod, so that a client's intercept has one claim.
func claimName(key interceptKey, grant string) string {
	return "tp-claim-" + hashOf(key.namespace, key.kind, key.workload, key.port, grant)[:40]
}

// Take writes the claim of the intercept of key that grant allows, as c says, and returns
// the port's other live claims (the caller checks them for conflicts). With an error, the
// caller cannot know the others: it refuses the intercept.
func (cl *Claims) Take(ctx context.Context, key interceptKey, grant string, c claim) ([]*intercept, error) {
	c.Pod, c.Key, c.Grant = cl.Pod, []string{key.namespace, key.kind, key.workload, key.port}, grant
	name := claimName(key, grant)
	lk := cl.lock(name)
	lk.Lock()
	defer lk.Unlock()
	lk.gen.Add(1)
	lk.taken = time.Now()
	leases := cl.CS.CoordinationV1().Leases(cl.Namespace)
	sel := metav1.ListOptions{LabelSelector: ClaimLabel + "=" + portHash(key)}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(rand.IntN(50*attempt)) * time.Millisecond) // a storm of moves spreads out
		}
		list, err := leases.List(ctx, sel)
		if err != nil {
			return nil, fmt.Errorf("reading the intercepts of port %s of %s/%s on the other manager pods: %w", key.port, key.namespace, key.workload, err)
		}
		var mine *coordinationv1.Lease
		for i := range list.Items {
			if list.Items[i].Name == name {
				mine = &list.Items[i]
			}
		}
		old, ok := readClaim(mine)
		if ok && old.same(c) {
			return cl.others(ctx, key, name, list.Items)
		}
		if ok && old.Pod != cl.Pod && old.Hash != "" && old.Hash != c.Hash {
			// The same intercept name, another client's secret, served by another pod:
			// that client's, while its pod lives.
			alive, err := cl.Pods.Exists(ctx, old.Pod)
			if err != nil {
				return nil, err
			}
			if alive {
				return nil, fmt.Errorf("intercept %q in namespace %q is held by %s (since %s), through another manager pod: pick another name (tp intercept --name)",
					c.Name, key.namespace, old.asIntercept(key).describeHolder(), old.Since.UTC().Format(time.RFC3339))
			}
		}
		err = cl.write(ctx, mine, name, key, c)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || (mine != nil && apierrors.IsNotFound(err)) {
			if attempt < 6 {
				continue // another pod wrote it meanwhile: read again
			}
		}
		if err != nil {
			return nil, fmt.Errorf("recording intercept %q for the other manager pods: %w", c.Name, err)
		}
		// Read after the write: a pod that wrote a conflicting claim meanwhile is seen here,
		// or it sees this one.
		if list, err = leases.List(ctx, sel); err != nil {
			return nil, fmt.Errorf("reading the intercepts of port %s of %s/%s on the other manager pods: %w", key.port, key.namespace, key.workload, err)
		}
		return cl.others(ctx, key, name, list.Items)
	}
}

func (cl *Claims) write(ctx context.Context, mine *coordinationv1.Lease, name string, key interceptKey, c claim) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	leases := cl.CS.CoordinationV1().Leases(cl.Namespace)
	if mine == nil {
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: cl.Namespace,
			Labels:      map[string]string{ClaimLabel: portHash(key), claimPodLabel: labelValue(c.Pod)},
			Annotations: map[string]string{claimAnnotation: string(b)}}}, metav1.CreateOptions{})
		return err
	}
	mine = mine.DeepCopy()
	if mine.Annotations == nil {
		mine.Annotations = map[string]string{}
	}
	mine.Annotations[claimAnnotation] = string(b)
	if mine.Labels == nil {
		mine.Labels = map[string]string{}
	}
	mine.Labels[claimPodLabel] = labelValue(c.Pod)
	_, err = leases.Update(ctx, mine, metav1.UpdateOptions{})
	return err
}

func readClaim(l *coordinationv1.Lease) (claim, bool) {
	var c claim
	if l == nil || json.Unmarshal([]byte(l.Annotations[claimAnnotation]), &c) != nil || c.Pod == "" {
		return c, false
	}
	return c, true
}

// others are the live claims of items but name's. The claims of pods gone are left alone:
// their clients move them to the pods they come back to (all at once, after a crash; a
// removal here would race each of those moves), and the sweep removes the rest later.
func (cl *Claims) others(ctx context.Context, key interceptKey, name string, items []coordinationv1.Lease) ([]*intercept, error) {
	var out []*intercept
	for i := range items {
		l := &items[i]
		if l.Name == name {
			continue
		}
		c, ok := readClaim(l)
		if ok && c.Pod == cl.Pod {
			continue // this pod's own: the registry knows them better
		}
		alive, err := cl.Pods.Exists(ctx, c.Pod)
		if err != nil {
			return nil, err
		}
		if !ok || !alive {
			continue
		}
		out = append(out, c.asIntercept(key))
	}
	return out, nil
}

// remove deletes claim l if it is unchanged since read.
func (cl *Claims) remove(ctx context.Context, l *coordinationv1.Lease) {
	rv := l.ResourceVersion
	err := cl.CS.CoordinationV1().Leases(cl.Namespace).Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && cl.Log != nil {
		cl.Log.Warn("cannot remove an intercept claim", "claim", l.Name, "err", err)
	}
}

// Release removes the claim of the intercept of key that grant allows, unless another pod
// serves it now (the client moved there), a Take came after gen, or held says this pod
// holds the intercept again.
func (cl *Claims) Release(ctx context.Context, key interceptKey, grant string, gen uint64, held func() bool) {
	lk := cl.lock(claimName(key, grant))
	lk.Lock()
	defer lk.Unlock()
	if lk.gen.Load() != gen || held() {
		return
	}
	l, err := cl.CS.CoordinationV1().Leases(cl.Namespace).Get(ctx, claimName(key, grant), metav1.GetOptions{})
	if err != nil {
		if !apierrors.IsNotFound(err) && cl.Log != nil {
			cl.Log.Warn("cannot read an intercept claim to remove it", "claim", claimName(key, grant), "err", err)
		}
		return
	}
	if c, ok := readClaim(l); ok && c.Pod != cl.Pod {
		return
	}
	cl.remove(ctx, l)
}

// SetClaims makes the registry share its intercepts with the manager's other pods.
func (r *Registry) SetClaims(c *Claims) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claims = c
}

// claimWait bounds the release of a claim, which runs on its own.
const claimWait = 10 * time.Second

// claim records the intercept req asks for among the manager's pods, and returns the
// port's intercepts on the other pods. Without claims (one pod), it records nothing.
func (r *Registry) claim(ctx context.Context, c *clientSession, req *tunnelpb.InterceptRequest, holder string) ([]*intercept, error) {
	r.mu.Lock()
	cl := r.claims
	who := cmp.Or(req.GetClient(), c.who)
	r.mu.Unlock()
	if cl == nil || req.GetName() == "" || req.GetGrant() == "" {
		return nil, nil
	}
	return cl.Take(ctx, interceptKeyOf(req), req.GetGrant(), claim{Name: req.GetName(), Holder: holder, Client: who, Since: time.Now(),
		Wiretap: req.GetWiretap(), Filter: route.FromProto(req.GetHttp()), Hash: grant.Hash(req.GetSecret())})
}

// elsewhere are the intercepts the other manager pods serve whose grants wanted names, with
// the hash it gives: List tells about them too, so that a client sees the team's intercepts
// (tp list) and never takes over a grant in use (grantLive), whichever pod it is on.
func (r *Registry) elsewhere(ctx context.Context, wanted func(ns, grant, hash string) bool) []*tunnelpb.InterceptInfo {
	r.mu.Lock()
	cl := r.claims
	r.mu.Unlock()
	if cl == nil {
		return nil
	}
	list, err := cl.CS.CoordinationV1().Leases(cl.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ClaimLabel})
	if err != nil {
		r.log.Warn("cannot list the other manager pods' intercepts", "err", err)
		return nil
	}
	var out []*tunnelpb.InterceptInfo
	for i := range list.Items {
		c, ok := readClaim(&list.Items[i])
		if !ok || c.Pod == cl.Pod || len(c.Key) != 4 || !wanted(c.Key[0], c.Grant, c.Hash) {
			continue
		}
		if alive, err := cl.Pods.Exists(ctx, c.Pod); err != nil || !alive {
			continue
		}
		info := &tunnelpb.InterceptInfo{Name: c.Name, Namespace: c.Key[0], Kind: c.Key[1], Workload: c.Key[2], Port: c.Key[3],
			Client: c.Client, SinceUnix: c.Since.Unix(), Holder: c.Holder, Grant: c.Grant, Wiretap: c.Wiretap}
		if c.Filter != nil {
			info.Http = c.Filter.Proto()
		}
		out = append(out, info)
	}
	return out
}

// releaseLocked lets go of the claim of the intercept of key that grant allows, in the
// background. A draining pod keeps its claims: its clients are moving them to other pods.
func (r *Registry) releaseLocked(key interceptKey, grant string) {
	if r.claims == nil || r.draining != "" || grant == "" {
		return
	}
	cl := r.claims
	gen := cl.gen(key, grant)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), claimWait)
		defer cancel()
		cl.Release(ctx, key, grant, gen, func() bool { return r.holds(key, grant) })
	}()
}

// claimSweep is how often a manager pod removes its claims that no intercept of its own
// has (a Release that failed, a restart of its container); a claim taken since the last
// sweep is left for the next.
const claimSweep = 30 * time.Second

// SweepClaims removes, every claimSweep until ctx ends, this pod's stale claims.
func (r *Registry) SweepClaims(ctx context.Context) {
	remote.Every(ctx, claimSweep, func(time.Time) bool {
		r.sweepClaims(ctx)
		return true
	})
}

func (r *Registry) sweepClaims(ctx context.Context) {
	r.mu.Lock()
	cl, draining := r.claims, r.draining != ""
	r.mu.Unlock()
	if cl == nil || draining {
		return
	}
	list, err := cl.CS.CoordinationV1().Leases(cl.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ClaimLabel})
	if err != nil {
		r.log.Warn("cannot list the intercept claims", "err", err)
		return
	}
	for i := range list.Items {
		l := &list.Items[i]
		c, ok := readClaim(l)
		if !ok || c.Pod != cl.Pod || len(c.Key) != 4 {
			// Another pod's: removed once that pod is gone and its clients had time to
			// move the claim (they assert their intercepts again at once).
			if alive, err := cl.Pods.Exists(ctx, c.Pod); err == nil && !alive && time.Since(claimWritten(l)) > cmp.Or(cl.moveGrace, claimSweep) {
				r.log.Info("removing the intercept claim of a manager pod gone", "claim", l.Name, "pod", c.Pod)
				cl.remove(ctx, l)
			}
			continue
		}
		key := interceptKey{c.Key[0], c.Key[1], c.Key[2], c.Key[3]}
		lk := cl.lock(l.Name)
		lk.Lock()
		if time.Since(lk.taken) >= claimSweep && !r.holds(key, c.Grant) {
			r.log.Info("removing a stale intercept claim", "claim", l.Name, "intercept", c.Name)
			cl.remove(ctx, l)
		}
		lk.Unlock()
	}
}

// holds reports whether an intercept of this pod has key and grant.
func (r *Registry) holds(key interceptKey, grant string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.byKey[key], func(it *intercept) bool { return it.grant == grant })
}
