package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
	httproute "github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/remote/laptop/portforward"
	"github.com/tpdev/tp/remote/laptop/session"
)

// InterceptConfig is tp intercept's configuration.
type InterceptConfig struct {
	Workload string   // NAME, deploy/NAME, sts/NAME or rs/NAME
	Ports    []string // LOCAL[:REMOTE] each
	// Name is the intercept's: default WORKLOAD-PORT, or WORKLOAD for several ports (each
	// port's is then NAME-PORT, and tp leave NAME ends them all).
	Name string
	// EnvFile and EnvJSON receive the app container's environment.
	EnvFile, EnvJSON string
	DryRun           bool
	ManagerNamespace string
	Timeout          time.Duration // for the agents
	// Command, when given, runs with the app's environment and the intercept lasts as long.
	Command []string
	// HTTPHeaders (NAME=VALUE, NAME=~REGEX, or auto) and HTTPPath (/PREFIX, =/PATH,
	// ~REGEX) filter the intercept: only the requests they match come here.
	HTTPHeaders []string
	HTTPPath    string
	// Wiretap: copies of the requests (those the filter matches, or every connection)
	// come here; the app still answers the callers, and what comes back from here is
	// dropped.
	Wiretap bool
	// Output is text (default: messages on stderr), json or yaml: then the intercept held
	// (output.Intercept) goes to stdout too. Not with Command or DryRun.
	Output string
	// NoMount leaves out the workload's files that Command gets under $TP_ROOT (--mount=false).
	NoMount bool
}

// holdFunc asks for an intercept.
type holdFunc func(context.Context, session.InterceptSpec) (session.Held, error)

// httpFilter reads the filter flags; nil for none (the intercept takes every connection).
// Every filter gets an id: requests that carry IDHeader with it are the developer's own.
func httpFilter(headers []string, path string) (*httproute.Filter, error) {
	if len(headers) == 0 && path == "" {
		return nil, nil
	}
	f := &httproute.Filter{}
	for _, h := range headers {
		if h == "auto" {
			continue // the id alone
		}
		m, err := httproute.ParseHeader(h)
		if err != nil {
			return nil, remote.Errorf(remote.Usage, "%v", err)
		}
		f.Headers = append(f.Headers, m)
	}
	if path != "" {
		m, err := httproute.ParsePath(path)
		if err != nil {
			return nil, remote.Errorf(remote.Usage, "%v", err)
		}
		f.Path = &m
	}
	id, err := newFilterID()
	if err != nil {
		return nil, err
	}
	f.ID = id
	return f, nil
}

// newFilterID is the local user's name (as far as a header value takes it) and 64 random
// bits: alice-1a2b3c4d5e6f7a8b. The id alone routes a request to the laptop, so it must not
// be guessed by whoever can send requests to the Service (through a public ingress too).
func newFilterID() (string, error) {
	name := "tp"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if i := strings.LastIndexAny(name, `\/`); i >= 0 {
		name = name[i+1:] // DOMAIN\user on Windows
	}
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return -1
	}, name)
	if clean == "" || len(clean) > 32 {
		clean = "tp"
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("intercept id: %w", err)
	}
	return clean + "-" + hex.EncodeToString(b[:]), nil
}

// looksTLS reports whether a Service port is named or numbered as TLS usually is: the
// agent cannot read its requests, so it cannot filter them.
func looksTLS(t *intercept.Target) bool {
	for _, name := range []string{t.ServicePortName, t.TargetPortName} {
		switch strings.ToLower(name) {
		case "https", "tls", "grpcs", "wss", "h2", "ssl":
			return true
		}
	}
	return t.ServicePort == 443 || t.ServicePort == 8443
}

// parsePort reads LOCAL[:REMOTE].
func parsePort(s string) (local int, target string, err error) {
	l, r, _ := strings.Cut(s, ":")
	local, err = strconv.Atoi(l)
	if err != nil || local < 1 || local > 65535 {
		return 0, "", remote.Errorf(remote.Usage, "--port %q: want LOCAL[:REMOTE], LOCAL a port number, e.g. --port 8080:80 or --port 8080:http", s)
	}
	return local, r, nil
}

// Intercept is tp intercept: the agent in the workload, then the intercept held by the
// running connection (started when none runs), or, with a command, by this process for
// the command's lifetime.
func (c *Client) Intercept(ctx context.Context, cfg InterceptConfig) error {
	if cfg.Workload == "" {
		return remote.Errorf(remote.Usage, "name the workload to intercept: tp intercept WORKLOAD --port LOCAL[:REMOTE]")
	}
	f, err := interceptFormat(cfg)
	if err != nil {
		return err
	}
	k, err := c.connectedCluster(ctx)
	if err != nil {
		return err
	}
	in, err := c.prepareIntercept(ctx, k, cfg)
	if err != nil || in == nil {
		return err
	}
	problems := &problemReporter{w: c.Err}
	hold, leave, done, err := c.holder(ctx, k, in.managerNS, len(cfg.Command) > 0, problems.report)
	if err != nil {
		return err
	}
	defer done()
	var env []intercept.EnvVar
	if cfg.EnvFile != "" || cfg.EnvJSON != "" || len(cfg.Command) > 0 {
		if env, err = writeEnvs(ctx, in, cfg.EnvFile, cfg.EnvJSON); err != nil {
			return err
		}
	}
	if err := in.hold(ctx, c.Err, cfg.Timeout, hold, leave); err != nil {
		return err
	}
	if len(cfg.Command) == 0 {
		fmt.Fprintf(c.Err, "tp: end it with: tp leave %s\n", in.name)
		if f.Structured() {
			return output.Write(c.Out, f, in.result())
		}
		return nil
	}
	problems.start()
	defer in.leaveAll(leave)
	// The command gets the workload's files too, as tp run --as gives them; the intercept
	// goes on without them when they cannot be written.
	if !cfg.NoMount {
		if files, err := writePodFiles(ctx, c.Err, in.cs, in.ref, in.target, "", c.log()); err != nil {
			fmt.Fprintf(c.Err, "tp: the workload's files are not written under $%s: %v\n", RootEnv, err)
		} else {
			defer files.Close()
			env = append(env, intercept.EnvVar{Name: RootEnv, Value: files.Root})
		}
	}
	cmd, err := startCommand(cfg.Command, withEnv(os.Environ(), env), c.Stdio)
	if err != nil {
		return err
	}
	return waitCommand(cmd)
}

// interceptFormat is -o of tp intercept: text only with a command (stdout is the
// command's) and with --dry-run (a diff).
func interceptFormat(cfg InterceptConfig) (output.Format, error) {
	f, err := output.Parse(cfg.Output)
	switch {
	case err != nil:
		return "", err
	case f.Structured() && len(cfg.Command) > 0:
		return "", remote.Errorf(remote.Usage, "-o %s: with -- CMD, stdout is the command's and tp's messages stay text on stderr; drop -o, or run tp intercept -o %s first and the command after it", f, f)
	case f.Structured() && cfg.DryRun:
		return "", remote.Errorf(remote.Usage, "-o %s: --dry-run prints a diff of the workload, as text only", f)
	}
	return f, nil
}

// result is the intercept held, for -o json and yaml.
func (in *pendingIntercept) result() output.Intercept {
	r := output.Intercept{Header: output.NewHeader(output.KindIntercept), Name: in.name,
		Workload: output.WorkloadRef{Namespace: in.ref.Namespace, Kind: in.ref.Kind, Name: in.ref.Name}, Ports: []output.InterceptPort{}}
	for i, p := range in.ports {
		r.HTTP, r.Wiretap = p.spec.HTTP, p.spec.Wiretap
		port := output.InterceptPort{Name: p.spec.Name, Port: p.spec.Port, Service: p.target.Service, ServicePort: p.target.ServicePort, Local: p.spec.Local}
		if i < len(in.helds) {
			port.Agents, port.Note = in.helds[i].Agents, in.helds[i].Overlap
		}
		r.Ports = append(r.Ports, port)
	}
	return r
}

// holder is who holds the intercept: with a command, this process, on a connection of its
// own, for exactly the command's lifetime (onProblem hears what the manager reports about
// its intercepts); else the running connection for k (started when none runs), whose log
// has the problems. done releases what holder opened.
func (c *Client) holder(ctx context.Context, k *Kube, managerNS string, own bool, onProblem func(name, problem string)) (hold holdFunc, leave func(string) error, done func(), err error) {
	if own {
		conn, err := c.openPrivate(ctx, k, managerNS, portforward.Auto, 30*time.Second, nil)
		if err != nil {
			return nil, nil, nil, err
		}
		conn.sess.OnInterceptProblem(onProblem)
		return conn.sess.Intercept, conn.sess.Leave, conn.Close, nil
	}
	daemon, err := c.ensureDaemon(ctx, k, managerNS)
	if err != nil {
		return nil, nil, nil, err
	}
	hold = func(ctx context.Context, s session.InterceptSpec) (session.Held, error) {
		return control.Intercept(ctx, daemon, s)
	}
	leave = func(n string) error { return control.Leave(ctx, daemon, n) }
	return hold, leave, func() {}, nil
}

// problemReporter tells the user of `tp intercept -- CMD` what the manager finds wrong
// with the intercept while the command runs: "tp: intercept NAME: PROBLEM" when a problem
// appears or changes, "tp: intercept NAME: delivers again" when it clears. Until start
// (while the intercept is being set up, when the workload's old pods still lack the agent)
// it only keeps the latest report; start prints a problem still standing.
type problemReporter struct {
	w       io.Writer
	mu      sync.Mutex
	started bool
	latest  map[string]string
	told    map[string]bool // a problem was printed: its end is news too
}

// report is the session's OnInterceptProblem function.
func (p *problemReporter) report(name, problem string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.latest == nil {
		p.latest, p.told = map[string]string{}, map[string]bool{}
	}
	p.latest[name] = problem
	if p.started {
		p.printLocked(name)
	}
}

// start prints the problems that stand, and from then on every change.
func (p *problemReporter) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started = true
	for _, name := range slices.Sorted(maps.Keys(p.latest)) {
		p.printLocked(name)
	}
}

func (p *problemReporter) printLocked(name string) {
	switch problem := p.latest[name]; {
	case problem != "":
		fmt.Fprintf(p.w, "tp: intercept %s: %s\n", name, problem)
		p.told[name] = true
	case p.told[name]:
		fmt.Fprintf(p.w, "tp: intercept %s: delivers again\n", name)
		p.told[name] = false
	}
}

// writeEnvs reads the app container's environment and writes it where asked.
func writeEnvs(ctx context.Context, in *pendingIntercept, file, jsonFile string) ([]intercept.EnvVar, error) {
	env, err := remoteEnv(ctx, in.cs, in.ref, in.target, "")
	if err != nil {
		return nil, err
	}
	if err := writeEnv(file, env, intercept.WriteEnvFile); err != nil {
		return nil, err
	}
	if err := writeEnv(jsonFile, env, intercept.WriteEnvJSON); err != nil {
		return nil, err
	}
	return env, nil
}

// pendingIntercept is an intercept whose agent is in place (or on its way): what is left is
// to hold it, one session intercept per port.
type pendingIntercept struct {
	cs        kubernetes.Interface
	ref       intercept.Ref
	target    *intercept.Target // the first port's: its container's environment is the command's
	plan      *intercept.Plan
	ports     []pendingPort
	name      string // what tp leave takes: the one port's intercept, or the group of them
	managerNS string
	// agent and targets are what the agent was injected with, to roll the pods again.
	agent   intercept.AgentConfig
	targets []intercept.Target
	// helds are what holding each port's intercept answered, once hold has.
	helds []session.Held
}

// reroll rolls the workload's pods again when some run without the agent (Inject finds
// them and changes nothing otherwise), telling w why.
func (in *pendingIntercept) reroll(w io.Writer) func(ctx context.Context, problem string) error {
	return func(ctx context.Context, problem string) error {
		plan, err := intercept.Inject(ctx, in.cs, in.ref, in.agent, in.targets, false)
		if err != nil {
			return err
		}
		if plan.Changed {
			fmt.Fprintf(w, "tp: note: %s; rolling the pods again\n", problem)
		}
		return nil
	}
}

type pendingPort struct {
	target *intercept.Target
	spec   session.InterceptSpec
}

// names are the session intercepts it holds.
func (in *pendingIntercept) names() []string {
	var out []string
	for _, p := range in.ports {
		out = append(out, p.spec.Name)
	}
	return out
}

// leaveAll ends every port's intercept.
func (in *pendingIntercept) leaveAll(leave func(string) error) {
	for _, n := range in.names() {
		_ = leave(n)
	}
}

// prepareIntercept resolves the workload and each LOCAL[:REMOTE] and puts the agent in the
// workload (or, with DryRun, prints what that changes and returns nil).
func (c *Client) prepareIntercept(ctx context.Context, k *Kube, cfg InterceptConfig) (*pendingIntercept, error) {
	if len(cfg.Ports) == 0 {
		return nil, remote.Errorf(remote.Usage, "--port is required: tp intercept %s --port LOCAL[:REMOTE]", cfg.Workload)
	}
	type asked struct {
		local  int
		remote string
	}
	var ports []asked
	for _, p := range cfg.Ports {
		local, remotePort, err := parsePort(p)
		if err != nil {
			return nil, err
		}
		for _, o := range ports {
			if o.local == local {
				return nil, remote.Errorf(remote.Usage, "--port %s: local port %d is given twice", p, local)
			}
		}
		ports = append(ports, asked{local, remotePort})
	}
	filter, err := httpFilter(cfg.HTTPHeaders, cfg.HTTPPath)
	if err != nil {
		return nil, err
	}
	cs, err := c.kubeClient(k)
	if err != nil {
		return nil, err
	}
	ref, err := intercept.ParseRef(k.Namespace, cfg.Workload)
	if err != nil {
		return nil, err
	}
	if err := intercept.CheckAllowed(ctx, cs, ref.Namespace); err != nil {
		return nil, err
	}
	var targets []intercept.Target
	for _, p := range ports {
		target, err := intercept.Resolve(ctx, cs, ref, p.remote)
		if err != nil {
			return nil, err
		}
		if filter != nil && looksTLS(target) {
			return nil, remote.Errorf(remote.Usage, "Service %s port %d (%s) carries TLS: tp's agent cannot read encrypted requests, so it cannot filter them by header or path; intercept the port whole (no --http-header/--http-path), or filter a port that carries plain HTTP",
				target.Service, target.ServicePort, target.TargetPortName)
		}
		for _, o := range targets {
			if o.TargetPortName == target.TargetPortName {
				return nil, remote.Errorf(remote.Usage, "--port: %s's port %s is given twice", ref.Name, target.TargetPortName)
			}
		}
		targets = append(targets, *target)
	}
	agentCfg, err := agentConfig(ctx, k, cfg.ManagerNamespace)
	if err != nil {
		return nil, err
	}
	plan, err := intercept.Inject(ctx, cs, ref, agentCfg, targets, cfg.DryRun)
	if err != nil {
		return nil, err
	}
	if cfg.DryRun {
		printPlan(c.Out, plan)
		return nil, nil
	}
	if !plan.AlreadyInjected {
		fmt.Fprintf(c.Err, "tp: added tp's traffic agent to %s %s/%s; waiting for its pods\n", ref.Kind, ref.Namespace, ref.Name)
	}
	for _, warn := range plan.Warnings {
		fmt.Fprintf(c.Err, "tp: note: %s\n", warn)
	}
	in := &pendingIntercept{cs: cs, ref: ref, plan: plan, managerNS: cfg.ManagerNamespace, name: cfg.Name, agent: agentCfg, targets: targets}
	if in.name == "" {
		in.name = ref.Name
		if len(targets) == 1 {
			in.name += "-" + targets[0].TargetPortName
		}
		if cfg.Wiretap {
			in.name += "-tap"
		}
	}
	for i := range targets {
		spec := session.InterceptSpec{Name: in.name, Namespace: ref.Namespace, Kind: ref.Kind, Workload: ref.Name,
			Port: targets[i].TargetPortName, Local: "127.0.0.1:" + strconv.Itoa(ports[i].local), HTTP: filter, Wiretap: cfg.Wiretap}
		if len(targets) > 1 {
			// One name for the user, one session intercept per port: NAME-PORT, grouped.
			spec.Name, spec.Group = in.name+"-"+targets[i].TargetPortName, in.name
		}
		in.ports = append(in.ports, pendingPort{target: &targets[i], spec: spec})
	}
	in.target = in.ports[0].target
	return in, nil
}

// agentConfig is what the agent needs to reach the manager tp install put in mgrNS.
func agentConfig(ctx context.Context, k *Kube, mgrNS string) (intercept.AgentConfig, error) {
	inst, err := deploy.Status(ctx, k.REST, mgrNS)
	if err != nil {
		return intercept.AgentConfig{}, err
	}
	ca, err := deploy.AgentCA(ctx, k.REST, mgrNS)
	if err != nil {
		return intercept.AgentConfig{}, err
	}
	// The agent verifies the manager's certificate for the Service's name it dials.
	return intercept.AgentConfig{
		Image:          inst.Image,
		ManagerAddress: fmt.Sprintf("%s:%d", deploy.ManagerServerNames(mgrNS)[0], deploy.ClusterPort),
		TokenAudience:  agentspec.Audience,
		CABundle:       string(ca),
	}, nil
}

// hold asks for the intercept of every port until the agents serve it and the workload's
// pods are all theirs; on a failure it leaves those it holds.
func (in *pendingIntercept) hold(ctx context.Context, w io.Writer, timeout time.Duration, hold holdFunc, leave func(string) error) error {
	helds := make([]session.Held, len(in.ports))
	for i, p := range in.ports {
		held, err := waitForAgents(ctx, timeout, p.spec, hold, in.reroll(w), rerollGap)
		if err != nil {
			in.leaveAll(leave)
			return err
		}
		helds[i] = held
	}
	if !in.plan.AlreadyInjected {
		seen := map[string]bool{}
		for _, p := range in.ports {
			if seen[p.target.Service] {
				continue
			}
			seen[p.target.Service] = true
			if err := intercept.WaitRolledOut(ctx, in.cs, in.ref, p.target.Service, timeout); err != nil {
				in.leaveAll(leave)
				return err
			}
		}
	}
	in.helds = helds
	for i, p := range in.ports {
		if !p.spec.Wiretap { // a wiretap's copies are not on the callers' path
			in.confirm(ctx, w, p, hold)
		}
		in.printHeld(w, p, helds[i])
	}
	return nil
}

// Delivery is proven by probeRun connections in a row through the Service to the agents,
// asked for until confirmWait has passed. While kube-proxy still spreads connections over
// a gone pod and a new one, each probe reaches the agents at even odds: three in a row
// passed that one time in eight (seen in CI: the first request after tp intercept then
// hung), ten in a row one time in a thousand. Ten is what the manager allows per probe.
const (
	probeRun    = 10
	confirmWait = 30 * time.Second
)

// confirm waits until the Service of p delivers to the agents, as the manager's probe
// finds: after a rollout kube-proxy may send connections for a while to pods that are gone
// or have no agent, and the first request after tp intercept returns must not fail. When
// the probe keeps failing it says so, and the intercept stands.
func (in *pendingIntercept) confirm(ctx context.Context, w io.Writer, p pendingPort, hold holdFunc) {
	spec := p.spec
	spec.Probe = &session.ProbeSpec{Address: fmt.Sprintf("%s:%d", p.target.Service, p.target.ServicePort), Namespace: in.ref.Namespace, Count: probeRun}
	deadline := time.Now().Add(confirmWait)
	for {
		why := ""
		held, err := hold(ctx, spec)
		switch {
		case err != nil:
			why = err.Error()
		case held.Delivered == probeRun:
			return
		default:
			why = held.ProbeError
		}
		if time.Now().After(deadline) || strings.Contains(why, "did not answer the probe") || ctx.Err() != nil {
			fmt.Fprintf(w, "tp: note: requests to Service %s:%d may not all reach the intercept yet: %s\n", p.target.Service, p.target.ServicePort, why)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (in *pendingIntercept) printHeld(w io.Writer, p pendingPort, held session.Held) {
	f := p.spec.HTTP
	if p.spec.Wiretap {
		what := "every connection's bytes from the callers"
		if f != nil {
			what = "the requests that match " + f.String()
		}
		fmt.Fprintf(w, "tp: wiretapping %s %s/%s: copies of %s to Service %s:%d come to %s (intercept %q); the app still answers the callers, and answers from here are dropped\n",
			in.ref.Kind, in.ref.Namespace, in.ref.Name, what, p.target.Service, p.target.ServicePort, p.spec.Local, p.spec.Name)
		return
	}
	if f == nil {
		fmt.Fprintf(w, "tp: intercepting %s %s/%s: requests to Service %s:%d come to %s (intercept %q)\n",
			in.ref.Kind, in.ref.Namespace, in.ref.Name, p.target.Service, p.target.ServicePort, p.spec.Local, p.spec.Name)
		return
	}
	fmt.Fprintf(w, "tp: intercepting %s %s/%s: requests to Service %s:%d that match %s come to %s (intercept %q); all others go to the app\n",
		in.ref.Kind, in.ref.Namespace, in.ref.Name, p.target.Service, p.target.ServicePort, f, p.spec.Local, p.spec.Name)
	fmt.Fprintf(w, "tp: send your own requests here with the header  %s: %s\n", httproute.IDHeader, f.ID)
	if held.Overlap != "" {
		fmt.Fprintf(w, "tp: note: %s\n", held.Overlap)
	}
}

// How often, and how far apart, tp intercept rolls a workload's pods again when they
// started without the agent.
const (
	rerolls   = 2
	rerollGap = 15 * time.Second
)

// waitForAgents asks for the intercept until an agent serves it: after a first injection
// the workload's pods roll out with the agent, and it registers with the manager.
//
// While no agent registers and the manager reports a problem (pods started without the
// agent: the manager could not admit them, as right after its own rollout), reroll is
// asked, at most rerolls times, gap apart: it rolls the workload's pods again.
func waitForAgents(ctx context.Context, timeout time.Duration, spec session.InterceptSpec, hold holdFunc, reroll func(ctx context.Context, problem string) error, gap time.Duration) (session.Held, error) {
	start := time.Now()
	deadline, lastRoll, rolled := start.Add(timeout), start, 0
	for {
		held, err := hold(ctx, spec)
		if err != nil {
			return held, err
		}
		if held.Agents > 0 {
			return held, nil
		}
		if reroll != nil && held.Problem != "" && rolled < rerolls && time.Since(lastRoll) > gap {
			if err := reroll(ctx, held.Problem); err != nil {
				return held, err
			}
			lastRoll, rolled = time.Now(), rolled+1
		}
		if time.Now().After(deadline) {
			return held, fmt.Errorf("no traffic agent of %s %s/%s registered within %s: see kubectl -n %s get pods (the agent's container is %s)",
				spec.Kind, spec.Namespace, spec.Workload, timeout, spec.Namespace, agentspec.Container)
		}
		select {
		case <-ctx.Done():
			return held, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// ensureDaemon returns the name of the running connection for k, starting the default one
// when none runs.
func (c *Client) ensureDaemon(ctx context.Context, k *Kube, managerNS string) (string, error) {
	if info, ok := runningConnection(ctx, k); ok {
		return info.Name, nil
	}
	o := Options{ConnectConfig: ConnectConfig{Name: "default", Listen: "127.0.0.1:1080", ManagerNamespace: managerNS, Timeout: 30 * time.Second}}
	if info, err := control.Status(ctx, o.Name); err == nil {
		return "", remote.Errorf(remote.Usage, "the connection %q is to context %q, namespace %q: tp quit it, or tp connect to this namespace with --name and --listen", o.Name, info.Context, info.Namespace)
	}
	kf := KubeFlags{Kubeconfig: c.Kube.Kubeconfig, Context: c.Kube.Context, Namespace: k.Namespace}
	if _, err := c.spawnDaemon(ctx, kf, o); err != nil {
		return "", err
	}
	return o.Name, nil
}

// remoteEnv is the environment of a container of a ready pod of ref: the named one, else
// the one that serves target's port (an intercept's), else the pod's default container.
func remoteEnv(ctx context.Context, cs kubernetes.Interface, ref intercept.Ref, target *intercept.Target, container string) ([]intercept.EnvVar, error) {
	pod, err := intercept.PodOf(ctx, cs, ref)
	if err != nil {
		return nil, err
	}
	return intercept.Env(ctx, cs, pod, chosenContainer(pod, target, container))
}

// chosenContainer is the container named, else the one that serves target's port (an
// intercept's), else "" (the pod's default container).
func chosenContainer(pod *corev1.Pod, target *intercept.Target, container string) string {
	if container == "" && target != nil {
		return appContainer(pod, target.AppPort)
	}
	return container
}

// appContainer is the container that serves port, else the last one that is not tp's agent.
func appContainer(pod *corev1.Pod, port int32) string {
	container := ""
	for _, ctr := range pod.Spec.Containers {
		if ctr.Name != agentspec.Container {
			container = ctr.Name
			for _, p := range ctr.Ports {
				if p.ContainerPort == port {
					return ctr.Name
				}
			}
		}
	}
	return container
}

func writeEnv(path string, env []intercept.EnvVar, write func(io.Writer, []intercept.EnvVar) error) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600) // it may hold secrets
	if err != nil {
		return remote.Errorf(remote.Usage, "writing the environment: %v", err)
	}
	if err := write(f, env); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// withEnv is env with vars set over it.
func withEnv(env []string, vars []intercept.EnvVar) []string {
	set := map[string]bool{}
	var out []string
	for _, v := range vars {
		set[v.Name] = true
		out = append(out, v.Name+"="+v.Value)
	}
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !set[name] {
			out = append(out, kv)
		}
	}
	return out
}

func printPlan(w io.Writer, p *intercept.Plan) {
	if !p.Changed {
		fmt.Fprintf(w, "# %s %s/%s already has the agent for this port: nothing changes\n", p.Workload.Kind, p.Workload.Namespace, p.Workload.Name)
		return
	}
	fmt.Fprintf(w, "# %s %s/%s: its pod template before and after\n", p.Workload.Kind, p.Workload.Namespace, p.Workload.Name)
	printDiff(w, p.Before, p.After)
	if p.Pods != "" {
		fmt.Fprintf(w, "# its pods, as tp's webhook admits them (the template keeps no agent, so a GitOps tool finds nothing to revert)\n")
		printDiff(w, p.After, p.Pods)
	}
	for _, svc := range p.Services {
		fmt.Fprintf(w, "# Service %s: its ports before and after\n", svc.Name)
		printDiff(w, svc.Before, svc.After)
	}
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "# note: %s\n", warn)
	}
}

// printDiff prints the lines only in a with "-", only in b with "+", the rest with " ": a
// plain diff by longest common subsequence, enough for manifests of a few hundred lines.
func printDiff(w io.Writer, a, b string) {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			fmt.Fprintln(w, "  "+x[i])
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintln(w, "+ "+y[j])
			j++
		default:
			fmt.Fprintln(w, "- "+x[i])
			i++
		}
	}
}
