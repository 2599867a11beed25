package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/remote/laptop/session"
)

// StatusConfig is tp status's configuration.
type StatusConfig struct {
	Name   string // only this session ("" for all)
	Output string // text (default), json or yaml: output.Status
	JSON   bool   // the old --json: -o json
}

// Status is tp status: the running sessions (those of the Client's --context and
// --namespace, when given), as text or JSON.
func (c *Client) Status(ctx context.Context, cfg StatusConfig) error {
	f, err := output.Parse(cfg.Output)
	if err != nil {
		return err
	}
	if cfg.JSON && f == output.Text {
		f = output.JSON
	}
	infos, err := c.statuses(ctx, cfg.Name)
	if err != nil {
		return err
	}
	if f.Structured() {
		if infos == nil {
			infos = []control.Info{}
		}
		return output.Write(c.Out, f, output.Status{Header: output.NewHeader(output.KindStatus), Sessions: infos})
	}
	if len(infos) == 0 {
		fmt.Fprintln(c.Out, "tp: not connected (tp connect starts a connection)")
		return nil
	}
	now := time.Now()
	for _, info := range infos {
		printStatus(c.Out, info, now)
	}
	return nil
}

// statuses asks the named session, or every one, for its Info.
func (c *Client) statuses(ctx context.Context, name string) ([]control.Info, error) {
	names := []string{name}
	if name == "" {
		var err error
		if names, err = control.Names(); err != nil {
			return nil, err
		}
	}
	var infos []control.Info
	for _, n := range names {
		info, err := control.Status(ctx, n)
		if err != nil {
			if name != "" {
				return nil, remote.Errorf(remote.Usage, "no connection named %q is running (tp connect --name %s starts one)", n, n)
			}
			continue
		}
		if c.chosen(info) {
			infos = append(infos, info)
		}
	}
	return infos, nil
}

// chosen says whether a session is for the context and namespace given on the command
// line (a flag not given chooses every one); tp status reads no kubeconfig.
func (c *Client) chosen(info control.Info) bool {
	return (c.Kube.Context == "" || c.Kube.Context == info.Context) && (c.Kube.Namespace == "" || c.Kube.Namespace == info.Namespace)
}

func printStatus(w io.Writer, info control.Info, now time.Time) {
	var st session.Status
	_ = json.Unmarshal(info.Session, &st)
	fmt.Fprintf(w, "session %s: %s", info.Name, st.State)
	if !st.Since.IsZero() {
		fmt.Fprintf(w, " (for %s)", now.Sub(st.Since).Round(time.Second))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  context:     %s (%s)\n", info.Context, info.Cluster)
	fmt.Fprintf(w, "  namespace:   %s\n", info.Namespace)
	fmt.Fprintf(w, "  manager:     %s in %s (pod %s)\n", st.ManagerVersion, info.ManagerNamespace, st.ManagerPod)
	allowed := "none (tp install --allow-cidr adds ranges)"
	if len(st.AllowedCIDRs) > 0 {
		allowed = strings.Join(st.AllowedCIDRs, ", ")
	}
	fmt.Fprintf(w, "  may dial:    the cluster's ranges and names; also allowed: %s\n", allowed)
	auth := ""
	if info.ProxyAuth {
		auth = ", asks for credentials"
	}
	fmt.Fprintf(w, "  proxy:       %s (SOCKS5 and HTTP%s)\n", info.Listen, auth)
	fmt.Fprintf(w, "  pac file:    http://%s/proxy.pac\n", clientAddr(info.Listen))
	if info.DNSListen != "" {
		fmt.Fprintf(w, "  dns:         %s\n", info.DNSListen)
	}
	if info.Upstream != nil {
		fmt.Fprintf(w, "  upstream:    %s\n", describeUpstream(info.Upstream))
	} else {
		fmt.Fprintf(w, "  upstream:    none (destinations outside the cluster are dialed directly)\n")
	}
	fmt.Fprintf(w, "  flows:       %d open, %d total, %d failed; %s in, %s out\n", st.OpenFlows, st.TotalFlows, st.FailedFlows, humanBytes(st.BytesIn), humanBytes(st.BytesOut))
	if len(st.Lanes) > 0 {
		fmt.Fprintf(w, "  lanes:      ")
		for i, l := range st.Lanes {
			fmt.Fprintf(w, " %d %s (%d flows, %d bulk)", i, l.State, l.Flows, l.Bulk)
		}
		fmt.Fprintln(w)
	}
	printReconnects(w, st, now)
	printHeld(w, st.Intercepts, now)
	fmt.Fprintf(w, "\n  up since:    %s (pid %d, tp %s)\n", info.Started.Format(time.RFC3339), info.PID, info.Version)
	if info.LogPath != "" {
		fmt.Fprintf(w, "  log:         %s\n", info.LogPath)
	}
}

// printReconnects shows the latest changes of state, so that a flapping tunnel shows as
// one.
func printReconnects(w io.Writer, st session.Status, now time.Time) {
	fmt.Fprintf(w, "  reconnects:  %d", st.Reconnects)
	if st.Moves > 0 {
		fmt.Fprintf(w, " (and %d planned moves to another manager pod)", st.Moves)
	}
	if st.LastError != "" {
		fmt.Fprintf(w, " (last error %s ago: %s)", now.Sub(st.LastErrorAt).Round(time.Second), st.LastError)
	}
	if st.Reconnects == 0 {
		return
	}
	h := st.History
	if len(h) > 4 {
		h = h[len(h)-4:]
	}
	for _, tr := range h {
		fmt.Fprintf(w, "\n    %s %s", tr.At.Format(time.TimeOnly), tr.State)
		if tr.Error != "" {
			fmt.Fprintf(w, ": %s", tr.Error)
		}
	}
}

// printHeld lists the session's intercepts, each with the problem the manager reports for
// it.
func printHeld(w io.Writer, held []session.InterceptSpec, now time.Time) {
	if len(held) == 0 {
		return
	}
	fmt.Fprintf(w, "\n  intercepts:")
	for _, it := range held {
		fmt.Fprintf(w, "\n    %s: %s %s/%s port %s to %s (for %s)", it.Name, strings.ToLower(it.Kind), it.Namespace, it.Workload, it.Port, it.Local,
			now.Sub(it.Since).Round(time.Second))
		if it.Problem != "" {
			fmt.Fprintf(w, "\n      problem: %s", it.Problem)
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// QuitConfig is tp quit's configuration.
type QuitConfig struct {
	Name string // the session to end
	All  bool   // end every running session instead
}

// Quit is tp quit: it ends the named session, or every one, and waits for their processes.
func (c *Client) Quit(ctx context.Context, cfg QuitConfig) error {
	names := []string{cfg.Name}
	if cfg.All {
		var err error
		if names, err = control.Names(); err != nil {
			return err
		}
	}
	ended := 0
	for _, n := range names {
		err := control.Quit(ctx, n, 10*time.Second)
		if errors.Is(err, control.ErrNotRunning) {
			continue
		}
		if err != nil {
			return err
		}
		ended++
		fmt.Fprintf(c.Err, "tp: disconnected session %q\n", n)
	}
	if ended == 0 && !cfg.All {
		return remote.Errorf(remote.Usage, "no connection named %q is running", names[0])
	}
	return nil
}
