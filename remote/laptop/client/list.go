package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/remote/laptop/session"
)

// Leave is tp leave: whichever running connection holds the intercept ends it.
func (c *Client) Leave(ctx context.Context, name string) error {
	names, err := control.Names()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := control.Leave(ctx, n, name); err == nil {
			fmt.Fprintf(c.Err, "tp: ended intercept %q\n", name)
			return nil
		}
	}
	// Not an intercept's name: that of an intercept of several ports, or a workload's when
	// this machine holds one intercept of it.
	held := heldOf(ctx, names, func(sp session.InterceptSpec) bool { return sp.Group == name })
	if len(held) > 0 {
		for _, h := range held {
			if err := control.Leave(ctx, h.session, h.intercept); err != nil {
				return err
			}
		}
		fmt.Fprintf(c.Err, "tp: ended intercept %q (%d ports)\n", name, len(held))
		return nil
	}
	if ref, err := intercept.ParseRef("any", name); err == nil {
		held = heldOf(ctx, names, func(sp session.InterceptSpec) bool {
			return sp.Workload == ref.Name && strings.EqualFold(sp.Kind, ref.Kind)
		})
	}
	if len(held) > 0 && held[0].group != "" && !slices.ContainsFunc(held, func(h heldIntercept) bool { return h.group != held[0].group }) {
		return c.Leave(ctx, held[0].group) // the ports of one intercept
	}
	switch len(held) {
	case 0:
		return remote.Errorf(remote.Usage, "no running connection holds an intercept named %q, or of a workload so named (tp list shows them)", name)
	case 1:
		if err := control.Leave(ctx, held[0].session, held[0].intercept); err != nil {
			return err
		}
		fmt.Fprintf(c.Err, "tp: ended intercept %q of %s\n", held[0].intercept, name)
		return nil
	}
	var which []string
	for _, h := range held {
		which = append(which, h.intercept)
	}
	return remote.Errorf(remote.Usage, "this machine holds %d intercepts of %s: %s; name the one to end: tp leave NAME", len(held), name, strings.Join(which, ", "))
}

// heldIntercept is an intercept a running connection of this machine holds.
type heldIntercept struct{ session, intercept, group string }

// heldOf lists the intercepts the named connections hold that match.
func heldOf(ctx context.Context, sessions []string, match func(session.InterceptSpec) bool) []heldIntercept {
	var out []heldIntercept
	for _, n := range sessions {
		info, err := control.Status(ctx, n)
		if err != nil {
			continue
		}
		var st struct {
			Intercepts []session.InterceptSpec `json:"intercepts"`
		}
		if json.Unmarshal(info.Session, &st) != nil {
			continue
		}
		for _, sp := range st.Intercepts {
			if match(sp) {
				out = append(out, heldIntercept{n, sp.Name, sp.Group})
			}
		}
	}
	return out
}

// ListConfig is tp list's configuration.
type ListConfig struct {
	AllNamespaces bool
	Output        string // text (default), json or yaml: output.List
}

// List is tp list: the workloads that have tp's agent in the namespace (or all), and who
// intercepts them.
func (c *Client) List(ctx context.Context, cfg ListConfig) error {
	f, err := output.Parse(cfg.Output)
	if err != nil {
		return err
	}
	k, err := c.connectedCluster(ctx)
	if err != nil {
		return err
	}
	ns := k.Namespace
	if cfg.AllNamespaces {
		ns = ""
	}
	cs, err := c.kubeClient(k)
	if err != nil {
		return err
	}
	refs, err := intercept.Injected(ctx, cs, ns)
	if err != nil {
		return err
	}
	all, listErr := listIntercepts(ctx, k, ns)
	if listErr != nil {
		fmt.Fprintf(c.Err, "tp: note: who intercepts what is not shown: %v\n", listErr)
	}
	if f.Structured() {
		return output.Write(c.Out, f, listOutput(all.All, refs))
	}
	if len(all.All) == 0 && len(refs) == 0 {
		fmt.Fprintln(c.Out, "tp: no workload has tp's agent, nothing is intercepted")
		return nil
	}
	return printIntercepts(c.Out, all.All, refs)
}

// listIntercepts asks a daemon, that for k first: it lists the grants this user may read
// and asks the manager which are live, so the API server, not tp, decides which
// namespaces a developer sees.
func listIntercepts(ctx context.Context, k *Kube, ns string) (control.Intercepts, error) {
	if info, ok := runningConnection(ctx, k); ok {
		return control.ListIntercepts(ctx, info.Name, ns)
	}
	names, _ := control.Names()
	var all control.Intercepts
	var err error
	for _, n := range names {
		if all, err = control.ListIntercepts(ctx, n, ns); err == nil {
			break
		}
	}
	return all, err
}

// printIntercepts prints the intercepts, each with the problem the manager reports for it
// on a line of its own under it, then the workloads with the agent that none intercepts.
func printIntercepts(w io.Writer, all []control.InterceptInfo, refs []intercept.Ref) error {
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tAGENT\tINTERCEPT\tPORT\tREQUESTS\tBY\tSINCE")
	seen := map[string]bool{}
	for _, it := range all {
		key := it.Namespace + "/" + strings.ToLower(it.Kind) + "/" + it.Workload
		seen[key] = true
		by := it.Holder
		if it.Client != "" {
			by += " (" + it.Client + ")"
		}
		requests := "all"
		if it.HTTP != nil {
			requests = it.HTTP.String()
		}
		if it.Wiretap {
			requests = "copies of " + requests
		}
		fmt.Fprintf(tw, "%s/%s %s\t%d ready\t%s\t%s\t%s\t%s\t%s\n", it.Namespace, it.Workload, it.Kind, it.Agents, it.Name, it.Port, requests, by,
			time.Unix(it.SinceUnix, 0).Format(time.RFC3339))
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Namespace+refs[i].Name < refs[j].Namespace+refs[j].Name })
	for _, r := range refs {
		if !seen[r.Namespace+"/"+strings.ToLower(r.Kind)+"/"+r.Name] {
			fmt.Fprintf(tw, "%s/%s %s\tyes\t-\t-\t-\t-\t-\n", r.Namespace, r.Name, r.Kind)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The problems go in after the table is aligned: a line without cells would end the
	// columns above it.
	lines := strings.SplitAfter(table.String(), "\n")
	var out strings.Builder
	for i, l := range lines {
		out.WriteString(l)
		if i >= 1 && i <= len(all) && all[i-1].Problem != "" {
			fmt.Fprintf(&out, "  problem: %s\n", all[i-1].Problem)
		}
	}
	_, err := io.WriteString(w, out.String())
	return err
}

// ListJSON is tp list -o json (output.List), and the types in it, by their old names.
type (
	ListJSON      = output.List
	InterceptJSON = output.ListedIntercept
	WorkloadJSON  = output.Workload
)

// listOutput is tp list's shape for -o json and yaml.
func listOutput(all []control.InterceptInfo, refs []intercept.Ref) output.List {
	out := output.List{Header: output.NewHeader(output.KindList), Intercepts: []output.ListedIntercept{}, Workloads: []output.Workload{}}
	seen := map[string]bool{}
	for _, it := range all {
		seen[it.Namespace+"/"+strings.ToLower(it.Kind)+"/"+it.Workload] = true
		out.Intercepts = append(out.Intercepts, output.ListedIntercept{Name: it.Name, Namespace: it.Namespace, Kind: it.Kind, Workload: it.Workload,
			Port: it.Port, HTTP: it.HTTP, Wiretap: it.Wiretap, Holder: it.Holder, Client: it.Client, Since: time.Unix(it.SinceUnix, 0).UTC(), Agents: it.Agents, Problem: it.Problem})
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Namespace+refs[i].Name < refs[j].Namespace+refs[j].Name })
	for _, r := range refs {
		out.Workloads = append(out.Workloads, output.Workload{Namespace: r.Namespace, Kind: r.Kind, Name: r.Name,
			Intercepted: seen[r.Namespace+"/"+strings.ToLower(r.Kind)+"/"+r.Name]})
	}
	return out
}
