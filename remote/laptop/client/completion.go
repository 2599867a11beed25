package client

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/config"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

// CompletionCommand is a command as shell completion sees it: its names, its flags and its
// subcommands. The CLI describes its own commands with it; Complete decides what fits.
type CompletionCommand struct {
	Names    []string
	Flags    []CompletionFlag
	Commands []CompletionCommand
}

// CompletionFlag is one flag: its names (without dashes) and whether it takes a value.
type CompletionFlag struct {
	Names []string
	Value bool
}

// Completion directives, as cobra (and so kubectl's plugin completion) reads them on the
// last line of the answer.
const (
	CompleteFiles   = 0 // nothing fitting: the shell may offer file names
	CompleteNoFiles = 4 // the candidates are all there is
)

// ClusterCompletionTimeout bounds a completion that asks the cluster (workloads,
// namespaces), or the running sessions: a slow one yields nothing rather than a stuck
// prompt.
const ClusterCompletionTimeout = 2 * time.Second

// Shells tp completes for, and tp env prints for.
var (
	CompletionShells = []string{"bash", "zsh", "fish", "powershell"}
	exportShells     = []string{"posix", "fish", "powershell", "cmd", "json"}
	vifModes         = []string{"auto", "on", "off"}
)

// Complete answers what fits the last of args (the word being typed, possibly empty), the
// command line after the program's name: each candidate on a line, then the directive
// (":4"). Candidates of dynamic values come from the running sessions (their names, their
// intercepts) and from the cluster (workloads, namespaces; within
// ClusterCompletionTimeout, nothing on error).
func (c *Client) Complete(ctx context.Context, root CompletionCommand, args []string) error {
	cands, directive := c.completions(ctx, root, args)
	var b strings.Builder
	for _, s := range cands {
		b.WriteString(s + "\n")
	}
	fmt.Fprintf(&b, ":%d\n", directive)
	_, err := c.Out.Write([]byte(b.String()))
	return err
}

// completions parses args along root's commands and flags, as the CLI will.
func (c *Client) completions(ctx context.Context, root CompletionCommand, args []string) ([]string, int) {
	args, bare := joinEquals(args)
	if len(args) == 0 {
		args = []string{""}
	}
	cur, words := args[len(args)-1], args[:len(args)-1]
	cmd, path := root, []string(nil)
	kf := c.Kube // the words' own --kubeconfig, --context and -n win
	positional := 0
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			return nil, CompleteFiles // a command's own arguments
		}
		if name, ok := strings.CutPrefix(w, "-"); ok && w != "-" {
			name, value, hasValue := strings.Cut(strings.TrimPrefix(name, "-"), "=")
			f := findFlag(cmd.Flags, name)
			if f != nil && f.Value && !hasValue && i+1 < len(words) {
				i++
				value = words[i]
			}
			setKubeFlag(&kf, name, value)
			continue
		}
		if sub := findCommand(cmd.Commands, w); sub != nil && positional == 0 {
			cmd, path = *sub, append(path, sub.Names[0])
			continue
		}
		positional++
	}
	if kf != c.Kube {
		c = &Client{Kube: kf, Out: c.Out, Err: c.Err, Getenv: c.Getenv, clientset: c.clientset}
	}
	command := strings.Join(path, " ")
	// The value of a flag: --name NAME or --name=NAME.
	if len(words) > 0 && !strings.Contains(words[len(words)-1], "=") {
		last := words[len(words)-1]
		if name, ok := strings.CutPrefix(last, "-"); ok && last != "--" {
			if f := findFlag(cmd.Flags, strings.TrimPrefix(name, "-")); f != nil && f.Value {
				return c.flagValues(ctx, command, f.Names[0], cur)
			}
		}
	}
	if strings.HasPrefix(cur, "-") {
		if flag, prefix, ok := strings.Cut(cur, "="); ok {
			f := findFlag(cmd.Flags, strings.TrimLeft(flag, "-"))
			if f == nil || !f.Value {
				return nil, CompleteNoFiles
			}
			vals, directive := c.flagValues(ctx, command, f.Names[0], prefix)
			if !bare {
				for i := range vals {
					vals[i] = flag + "=" + vals[i]
				}
			}
			return vals, directive
		}
		return matching(flagNames(cmd.Flags), cur), CompleteNoFiles
	}
	if len(cmd.Commands) > 0 && positional == 0 {
		var names []string
		for _, sub := range cmd.Commands {
			names = append(names, sub.Names...)
		}
		return matching(names, cur), CompleteNoFiles
	}
	return c.argValues(ctx, command, positional, cur)
}

// flagValues are the values that fit the named flag of command.
func (c *Client) flagValues(ctx context.Context, command, flag, cur string) ([]string, int) {
	switch {
	case flag == "shell":
		return matching(exportShells, cur), CompleteNoFiles
	case flag == "vif":
		return matching(vifModes, cur), CompleteNoFiles
	case flag == "name" && slices.Contains([]string{"status", "quit", "env", "gather-logs"}, command):
		names, _ := control.Names()
		return matching(names, cur), CompleteNoFiles
	case flag == "context":
		return matching(c.contexts(), cur), CompleteNoFiles
	case flag == "namespace":
		return matching(c.namespaces(ctx), cur), CompleteNoFiles
	case flag == "intercept" && command == "run":
		return matching(c.workloads(ctx), cur), CompleteNoFiles
	}
	return nil, CompleteFiles
}

// argValues are the arguments that fit at position n (0: the first) of command.
func (c *Client) argValues(ctx context.Context, command string, n int, cur string) ([]string, int) {
	switch {
	case command == "leave" && n == 0:
		return matching(heldNames(ctx), cur), CompleteNoFiles
	case command == "intercept" && n == 0:
		return matching(append(c.projectIntercepts(), c.workloads(ctx)...), cur), CompleteNoFiles
	case command == "completion" && n == 0:
		return matching(CompletionShells, cur), CompleteNoFiles
	case command == "run" || command == "intercept":
		return nil, CompleteFiles // the command to run
	}
	return nil, CompleteNoFiles
}

// projectIntercepts are the names of the intercepts the project's tp.yaml (found from the
// current folder) declares: tp intercept NAME takes them as it takes a workload.
func (c *Client) projectIntercepts() []string {
	dir, err := os.Getwd()
	if err != nil {
		return nil
	}
	fs, err := config.Load(c.getenv, dir)
	if err != nil {
		return nil // a bad file is tp intercept's to report, not completion's
	}
	return fs.InterceptNames()
}

// heldNames are the names of the intercepts this machine's running sessions hold, and of
// their intercepts of several ports: what tp leave takes. Asked of the control sockets
// only.
func heldNames(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, ClusterCompletionTimeout) // a stuck daemon
	defer cancel()
	names, _ := control.Names()
	var out []string
	for _, h := range heldOf(ctx, names, func(session.InterceptSpec) bool { return true }) {
		for _, n := range []string{h.group, h.intercept} {
			if n != "" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// workloads are the Deployments (NAME) and StatefulSets (sts/NAME) of the namespace the
// command line chooses.
func (c *Client) workloads(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, ClusterCompletionTimeout)
	defer cancel()
	k, err := c.connectedCluster(ctx)
	if err != nil {
		return nil
	}
	cs, err := c.kubeClient(shortTimeout(k))
	if err != nil {
		return nil
	}
	var out []string
	if deps, err := cs.AppsV1().Deployments(k.Namespace).List(ctx, metav1.ListOptions{}); err == nil {
		for _, d := range deps.Items {
			out = append(out, d.Name)
		}
	}
	if sts, err := cs.AppsV1().StatefulSets(k.Namespace).List(ctx, metav1.ListOptions{}); err == nil {
		for _, s := range sts.Items {
			out = append(out, "sts/"+s.Name)
		}
	}
	return out
}

// namespaces are the cluster's, for -n.
func (c *Client) namespaces(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, ClusterCompletionTimeout)
	defer cancel()
	k, err := c.cluster()
	if err != nil {
		return nil
	}
	cs, err := c.kubeClient(shortTimeout(k))
	if err != nil {
		return nil
	}
	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, ns := range list.Items {
		out = append(out, ns.Name)
	}
	return out
}

// contexts are the kubeconfig's, for --context: read locally, no cluster.
func (c *Client) contexts() []string {
	names, _ := kubeContexts(c.Kube.Kubeconfig)
	return names
}

// shortTimeout is k's REST config with ClusterCompletionTimeout on each request.
func shortTimeout(k *Kube) *Kube {
	in := *k
	cfg := *k.REST
	cfg.Timeout = ClusterCompletionTimeout
	in.REST = &cfg
	return &in
}

// joinEquals joins the words bash splits at "=" ("--shell", "=", "po") back into one
// ("--shell=po"); bare says the word being typed was so split, when the shell replaces
// only what follows the "=" and candidates are to be the values alone.
func joinEquals(args []string) ([]string, bool) {
	var out []string
	bare := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "=" && len(out) > 0 && strings.HasPrefix(out[len(out)-1], "-") && !strings.Contains(out[len(out)-1], "=") {
			out[len(out)-1] += "="
			if i+1 < len(args) {
				i++
				out[len(out)-1] += args[i]
			}
			bare = bare || i == len(args)-1
			continue
		}
		out = append(out, a)
	}
	return out, bare && strings.Contains(out[len(out)-1], "=")
}

func setKubeFlag(kf *KubeFlags, name, value string) {
	switch name {
	case "kubeconfig":
		kf.Kubeconfig = value
	case "context":
		kf.Context = value
	case "namespace", "n":
		kf.Namespace = value
	}
}

func findFlag(flags []CompletionFlag, name string) *CompletionFlag {
	for i := range flags {
		if slices.Contains(flags[i].Names, name) {
			return &flags[i]
		}
	}
	return nil
}

func findCommand(cmds []CompletionCommand, name string) *CompletionCommand {
	for i := range cmds {
		if slices.Contains(cmds[i].Names, name) {
			return &cmds[i]
		}
	}
	return nil
}

// flagNames are the flags as typed: --long, -s.
func flagNames(flags []CompletionFlag) []string {
	var out []string
	for _, f := range flags {
		for _, n := range f.Names {
			if len(n) == 1 {
				out = append(out, "-"+n)
			} else {
				out = append(out, "--"+n)
			}
		}
	}
	return out
}

// matching are the candidates that start with prefix, sorted, each once.
func matching(cands []string, prefix string) []string {
	var out []string
	for _, s := range cands {
		if strings.HasPrefix(s, prefix) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// CompletionScript writes the completion script for shell, for the program called prog
// (tp, or kubectl-tp's tp): it asks prog __complete for the candidates.
func (c *Client) CompletionScript(shell, prog string) error {
	script, ok := completionScripts[shell]
	if !ok {
		return remote.Errorf(remote.Usage, "no completion for shell %q: choose one of %s", shell, strings.Join(CompletionShells, ", "))
	}
	_, err := c.Out.Write([]byte(strings.ReplaceAll(script, "__PROG__", prog)))
	return err
}
