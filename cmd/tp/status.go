package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/session"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the running connections: cluster, namespace, tunnel state, flows, bytes",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "only this session"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			names := []string{c.String("name")}
			if names[0] == "" {
				var err error
				if names, err = control.Names(); err != nil {
					return err
				}
			}
			var infos []control.Info
			for _, n := range names {
				info, err := control.Status(c.Context, n)
				if err != nil {
					if c.String("name") != "" {
						return remote.Errorf(remote.Usage, "no connection named %q is running (tp connect --name %s starts one)", n, n)
					}
					continue
				}
				infos = append(infos, info)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if infos == nil {
					infos = []control.Info{}
				}
				return enc.Encode(infos)
			}
			if len(infos) == 0 {
				fmt.Fprintln(c.App.Writer, "tp: not connected (tp connect starts a connection)")
				return nil
			}
			for _, info := range infos {
				printStatus(c.App.Writer, info)
			}
			return nil
		},
	}
}

func printStatus(w io.Writer, info control.Info) {
	var st session.Status
	_ = json.Unmarshal(info.Session, &st)
	var px localproxy.Stats
	_ = json.Unmarshal(info.Proxy, &px)
	fmt.Fprintf(w, "session %s: %s", info.Name, st.State)
	if !st.Since.IsZero() {
		fmt.Fprintf(w, " (for %s)", time.Since(st.Since).Round(time.Second))
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
	if info.DNSListen != "" {
		fmt.Fprintf(w, "  dns:         %s\n", info.DNSListen)
	}
	fmt.Fprintf(w, "  flows:       %d open, %d total, %d failed; %s in, %s out\n", st.OpenFlows, st.TotalFlows, st.FailedFlows, humanBytes(st.BytesIn), humanBytes(st.BytesOut))
	if len(st.Lanes) > 0 {
		fmt.Fprintf(w, "  lanes:      ")
		for i, l := range st.Lanes {
			fmt.Fprintf(w, " %d %s (%d flows, %d bulk)", i, l.State, l.Flows, l.Bulk)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  reconnects:  %d", st.Reconnects)
	if st.LastError != "" {
		fmt.Fprintf(w, " (last error %s ago: %s)", time.Since(st.LastErrorAt).Round(time.Second), st.LastError)
	}
	if st.Reconnects > 0 {
		// The latest changes, so that a flapping tunnel shows as one.
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
	fmt.Fprintf(w, "\n  up since:    %s (pid %d, tp %s)\n", info.Started.Format(time.RFC3339), info.PID, info.Version)
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

func quitCommand() *cli.Command {
	return &cli.Command{
		Name:  "quit",
		Usage: "end a connection (all of them with --all)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Value: "default", Usage: "the session to end"},
			&cli.BoolFlag{Name: "all", Usage: "end every running session"},
		},
		Action: func(c *cli.Context) error {
			names := []string{c.String("name")}
			if c.Bool("all") {
				var err error
				if names, err = control.Names(); err != nil {
					return err
				}
			}
			ended := 0
			for _, n := range names {
				err := control.Quit(c.Context, n, 10*time.Second)
				if errors.Is(err, control.ErrNotRunning) {
					continue
				}
				if err != nil {
					return err
				}
				ended++
				fmt.Fprintf(c.App.ErrWriter, "tp: disconnected session %q\n", n)
			}
			if ended == 0 && !c.Bool("all") {
				return remote.Errorf(remote.Usage, "no connection named %q is running", names[0])
			}
			return nil
		},
	}
}
