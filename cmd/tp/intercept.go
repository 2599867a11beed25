package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

func interceptCommand() *cli.Command {
	return &cli.Command{
		Name:      "intercept",
		Usage:     "bring the requests that reach a workload's Service to a port on this machine",
		ArgsUsage: "WORKLOAD --port LOCAL[:REMOTE] [-- CMD ARGS...]",
		Description: `Requests to the workload's Service (from other pods, ingress included) land on LOCAL on this
machine until tp leave (or, with -- CMD, until the command exits). REMOTE is the Service's
port, by number or name (default: its only port). WORKLOAD is a Deployment (NAME or
deploy/NAME), a StatefulSet (sts/NAME) or a ReplicaSet (rs/NAME).

The first intercept of a workload adds tp's traffic agent to its pods (one rollout); later
intercepts and leaves take effect at once, without restarting pods. If this machine goes
away, the workload gets its traffic back within seconds.

   tp intercept web-app --port 8080:80
   tp intercept web-app --port 8080 --env-file web-app.env -- ./web-app
   tp intercept web-app --port 8080 --dry-run          # print the change to the workload`,
		Flags: append(kubeFlags(),
			&cli.StringFlag{Name: "port", Usage: "LOCAL[:REMOTE]: this machine's port, and the Service's port (number or name)"},
			&cli.StringFlag{Name: "name", Usage: "the intercept's name (default WORKLOAD-PORT)"},
			&cli.StringFlag{Name: "env-file", Usage: "write the app container's environment here (KEY=value lines)"},
			&cli.StringFlag{Name: "env-json", Usage: "write the app container's environment here (a JSON object)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the change the intercept makes to the workload, and change nothing"},
			&cli.StringFlag{Name: "manager-namespace", Value: deploy.DefaultNamespace, Usage: "where tp install put the traffic manager"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "how long to wait for the agents to be ready"},
		),
		Action: interceptAction,
	}
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

func interceptAction(c *cli.Context) error {
	if c.NArg() == 0 {
		return remote.Errorf(remote.Usage, "name the workload to intercept: tp intercept WORKLOAD --port LOCAL[:REMOTE]")
	}
	k, err := loadKube(c.String("kubeconfig"), c.String("context"), c.String("namespace"))
	if err != nil {
		return remote.UsageError(err)
	}
	ctx := c.Context
	in, err := prepareIntercept(c, k, c.Args().First(), c.String("port"), c.String("name"), c.Bool("dry-run"))
	if err != nil || in == nil {
		return err
	}
	cmdArgs := c.Args().Tail()
	if len(cmdArgs) > 0 && cmdArgs[0] == "--" {
		cmdArgs = cmdArgs[1:]
	}
	var hold func(context.Context, session.InterceptSpec) (int, error)
	var leave func(string) error
	if len(cmdArgs) > 0 {
		// The intercept lives exactly as long as the command: this process holds it.
		o := connectOptions{listen: "127.0.0.1:0", managerNS: in.managerNS, timeout: 30 * time.Second}
		conn, err := openConnection(ctx, o, k, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		defer conn.Close()
		hold, leave = conn.sess.Intercept, conn.sess.Leave
	} else {
		daemon, err := ensureDaemon(c, k, in.managerNS)
		if err != nil {
			return err
		}
		hold = func(ctx context.Context, s session.InterceptSpec) (int, error) {
			return control.Intercept(ctx, daemon, s)
		}
		leave = func(n string) error { return control.Leave(ctx, daemon, n) }
	}
	var env []intercept.EnvVar
	if c.String("env-file") != "" || c.String("env-json") != "" || len(cmdArgs) > 0 {
		if env, err = remoteEnv(ctx, in.cs, in.ref, in.target); err != nil {
			return err
		}
		if err := writeEnv(c.String("env-file"), env, intercept.WriteEnvFile); err != nil {
			return err
		}
		if err := writeEnv(c.String("env-json"), env, intercept.WriteEnvJSON); err != nil {
			return err
		}
	}
	if err := in.hold(c, hold, leave); err != nil {
		return err
	}
	if len(cmdArgs) == 0 {
		fmt.Fprintf(c.App.ErrWriter, "tp: end it with: tp leave %s\n", in.spec.Name)
		return nil
	}
	defer func() { _ = leave(in.spec.Name) }()
	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Env = withEnv(os.Environ(), env)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return remote.Errorf(remote.Usage, "running %s: %v", cmdArgs[0], err)
	}
	return waitCommand(cmd)
}

// pendingIntercept is an intercept whose agent is in place (or on its way): what is left is
// to hold it.
type pendingIntercept struct {
	cs        kubernetes.Interface
	ref       intercept.Ref
	target    *intercept.Target
	plan      *intercept.Plan
	spec      session.InterceptSpec
	managerNS string
}

// prepareIntercept resolves WORKLOAD and LOCAL[:REMOTE] and puts the agent in the
// workload (or, with dryRun, prints what that changes and returns nil).
func prepareIntercept(c *cli.Context, k *kube, workload, port, name string, dryRun bool) (*pendingIntercept, error) {
	if port == "" {
		return nil, remote.Errorf(remote.Usage, "--port is required: tp intercept %s --port LOCAL[:REMOTE]", workload)
	}
	local, remotePort, err := parsePort(port)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(k.cfg)
	if err != nil {
		return nil, err
	}
	ctx := c.Context
	ref, err := intercept.ParseRef(k.namespace, workload)
	if err != nil {
		return nil, err
	}
	if err := intercept.CheckAllowed(ctx, cs, ref.Namespace); err != nil {
		return nil, err
	}
	target, err := intercept.Resolve(ctx, cs, ref, remotePort)
	if err != nil {
		return nil, err
	}
	mgrNS := c.String("manager-namespace")
	inst, err := deploy.Status(ctx, k.cfg, mgrNS)
	if err != nil {
		return nil, err
	}
	ca, err := deploy.AgentCA(ctx, k.cfg, mgrNS)
	if err != nil {
		return nil, err
	}
	// The agent verifies the manager's certificate for the Service's name it dials.
	agentCfg := intercept.AgentConfig{
		Image:          inst.Image,
		ManagerAddress: fmt.Sprintf("%s:%d", deploy.ManagerServerNames(mgrNS)[0], deploy.ClusterPort),
		TokenAudience:  agentspec.Audience,
		CABundle:       string(ca),
	}
	plan, err := intercept.Inject(ctx, cs, ref, agentCfg, []intercept.Target{*target}, dryRun)
	if err != nil {
		return nil, err
	}
	if dryRun {
		printPlan(c.App.Writer, plan)
		return nil, nil
	}
	if !plan.AlreadyInjected {
		fmt.Fprintf(c.App.ErrWriter, "tp: added tp's traffic agent to %s %s/%s; waiting for its pods\n", ref.Kind, ref.Namespace, ref.Name)
	}
	for _, warn := range plan.Warnings {
		fmt.Fprintf(c.App.ErrWriter, "tp: note: %s\n", warn)
	}
	if name == "" {
		name = ref.Name + "-" + target.TargetPortName
	}
	spec := session.InterceptSpec{Name: name, Namespace: ref.Namespace, Kind: ref.Kind, Workload: ref.Name,
		Port: target.TargetPortName, Local: "127.0.0.1:" + strconv.Itoa(local)}
	return &pendingIntercept{cs: cs, ref: ref, target: target, plan: plan, spec: spec, managerNS: mgrNS}, nil
}

// hold asks for the intercept until the agents serve it and the workload's pods are all
// theirs.
func (in *pendingIntercept) hold(c *cli.Context, hold func(context.Context, session.InterceptSpec) (int, error), leave func(string) error) error {
	if err := waitForAgents(c.Context, c.Duration("timeout"), in.spec, hold); err != nil {
		_ = leave(in.spec.Name)
		return err
	}
	if !in.plan.AlreadyInjected {
		if err := intercept.WaitRolledOut(c.Context, in.cs, in.ref, in.target.Service, c.Duration("timeout")); err != nil {
			_ = leave(in.spec.Name)
			return err
		}
	}
	fmt.Fprintf(c.App.ErrWriter, "tp: intercepting %s %s/%s: requests to Service %s:%d come to %s (intercept %q)\n",
		in.ref.Kind, in.ref.Namespace, in.ref.Name, in.target.Service, in.target.ServicePort, in.spec.Local, in.spec.Name)
	return nil
}

// waitForAgents asks for the intercept until an agent serves it: after a first injection
// the workload's pods roll out with the agent, and it registers with the manager.
func waitForAgents(ctx context.Context, timeout time.Duration, spec session.InterceptSpec, hold func(context.Context, session.InterceptSpec) (int, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		agents, err := hold(ctx, spec)
		if err != nil {
			return err
		}
		if agents > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no traffic agent of %s %s/%s registered within %s: see kubectl -n %s get pods (the agent's container is %s)",
				spec.Kind, spec.Namespace, spec.Workload, timeout, spec.Namespace, agentspec.Container)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// ensureDaemon returns the name of the running connection for k, starting the default one
// when none runs.
func ensureDaemon(c *cli.Context, k *kube, managerNS string) (string, error) {
	if info, ok := runningConnection(c.Context, k); ok {
		return info.Name, nil
	}
	o := connectOptions{kubeconfig: c.String("kubeconfig"), context: c.String("context"), namespace: k.namespace,
		name: "default", listen: "127.0.0.1:1080", managerNS: managerNS, timeout: 30 * time.Second}
	if info, err := control.Status(c.Context, o.name); err == nil {
		return "", remote.Errorf(remote.Usage, "the connection %q is to context %q, namespace %q: tp quit it, or tp connect to this namespace with --name and --listen", o.name, info.Context, info.Namespace)
	}
	if err := spawnDaemon(c, o, io.Discard); err != nil {
		return "", err
	}
	return o.name, nil
}

func remoteEnv(ctx context.Context, cs kubernetes.Interface, ref intercept.Ref, target *intercept.Target) ([]intercept.EnvVar, error) {
	pod, err := intercept.PodOf(ctx, cs, ref)
	if err != nil {
		return nil, err
	}
	container := ""
	for _, ctr := range pod.Spec.Containers {
		if ctr.Name != agentspec.Container {
			container = ctr.Name
			for _, p := range ctr.Ports {
				if p.ContainerPort == target.AppPort {
					return envOf(ctx, cs, pod, ctr.Name)
				}
			}
		}
	}
	return envOf(ctx, cs, pod, container)
}

func envOf(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, container string) ([]intercept.EnvVar, error) {
	vars, err := intercept.Env(ctx, cs, pod, container)
	if err != nil {
		return nil, err
	}
	return vars, nil
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

func leaveCommand() *cli.Command {
	return &cli.Command{
		Name:      "leave",
		Usage:     "end an intercept",
		ArgsUsage: "NAME",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return remote.Errorf(remote.Usage, "name the intercept to end (tp list shows them): tp leave NAME")
			}
			names, err := control.Names()
			if err != nil {
				return err
			}
			for _, n := range names {
				if err := control.Leave(c.Context, n, c.Args().First()); err == nil {
					fmt.Fprintf(c.App.ErrWriter, "tp: ended intercept %q\n", c.Args().First())
					return nil
				}
			}
			return remote.Errorf(remote.Usage, "no running connection holds an intercept named %q (tp list shows them)", c.Args().First())
		},
	}
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list the workloads tp's agent is in, and who intercepts them",
		Flags: append(kubeFlags(), &cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "every namespace"}),
		Action: func(c *cli.Context) error {
			k, err := loadKube(c.String("kubeconfig"), c.String("context"), c.String("namespace"))
			if err != nil {
				return remote.UsageError(err)
			}
			ns := k.namespace
			if c.Bool("all-namespaces") {
				ns = ""
			}
			cs, err := kubernetes.NewForConfig(k.cfg)
			if err != nil {
				return err
			}
			refs, err := intercept.Injected(c.Context, cs, ns)
			if err != nil {
				return err
			}
			// The daemon lists the grants this user may read and asks the manager which are
			// live: the API server, not tp, decides which namespaces a developer sees.
			var all control.Intercepts
			var listErr error
			if info, ok := runningConnection(c.Context, k); ok {
				all, listErr = control.ListIntercepts(c.Context, info.Name, ns)
			} else if names, _ := control.Names(); len(names) > 0 {
				for _, n := range names {
					if all, listErr = control.ListIntercepts(c.Context, n, ns); listErr == nil {
						break
					}
				}
			}
			if listErr != nil {
				fmt.Fprintf(c.App.ErrWriter, "tp: note: who intercepts what is not shown: %v\n", listErr)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WORKLOAD\tAGENT\tINTERCEPT\tPORT\tBY\tSINCE")
			seen := map[string]bool{}
			for _, it := range all.All {
				key := it.Namespace + "/" + strings.ToLower(it.Kind) + "/" + it.Workload
				seen[key] = true
				by := it.Holder
				if it.Client != "" {
					by += " (" + it.Client + ")"
				}
				fmt.Fprintf(tw, "%s/%s %s\t%d ready\t%s\t%s\t%s\t%s\n", it.Namespace, it.Workload, it.Kind, it.Agents, it.Name, it.Port, by,
					time.Unix(it.SinceUnix, 0).Format(time.RFC3339))
			}
			sort.Slice(refs, func(i, j int) bool { return refs[i].Namespace+refs[i].Name < refs[j].Namespace+refs[j].Name })
			for _, r := range refs {
				if !seen[r.Namespace+"/"+strings.ToLower(r.Kind)+"/"+r.Name] {
					fmt.Fprintf(tw, "%s/%s %s\tyes\t-\t-\t-\t-\n", r.Namespace, r.Name, r.Kind)
				}
			}
			if len(all.All) == 0 && len(refs) == 0 {
				fmt.Fprintln(c.App.Writer, "tp: no workload has tp's agent, nothing is intercepted")
				return nil
			}
			return tw.Flush()
		},
	}
}
