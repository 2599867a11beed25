package main

import (
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/configcmd"
	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/client"
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
   tp intercept web-app --port 8080 --dry-run          # print the change to the workload
   tp intercept web-app --port 8080:http --port 9090:grpc   # one intercept, two ports

Personal intercepts: with --http-header or --http-path only the HTTP requests that match
come here (each request of a kept-alive connection on its own); all others go to the app,
and other developers may hold their own filtered intercepts of the same port at once. A
request that several filters match goes to the oldest of those intercepts. Every filtered
intercept also takes the requests that carry the header tp prints (x-tp-intercept: ID).

   tp intercept web-app --port 8080:80 --http-header x-dev=alice
   tp intercept web-app --port 8080:80 --http-header 'x-dev=~alice|al' --http-path /api/
   tp intercept web-app --port 8080:80 --http-header auto   # only requests with tp's header

Wiretaps: with --wiretap copies come here (of the requests a filter matches, or of every
connection's bytes from the callers) while the app, or whoever intercepts, answers the
callers; answers from here are dropped. A slow or vanished wiretap never slows the
callers: its copies stop once 1 MiB waits for it.

   tp intercept web-app --port 8080:80 --wiretap --http-path /api/

A project's tp.yaml (here or in a folder above, up to the one holding .git) may name
intercepts: tp intercept NAME takes NAME's workload and flags from it (flags given here
win), and tp intercept alone the only one it defines. tp config view shows them.`,
		Flags: append(kubeFlags(),
			&cli.GenericFlag{Name: "port", Value: &repeated{}, Usage: "LOCAL[:REMOTE]: this machine's port, and the Service's port (number or name); repeat it for several ports in one intercept"},
			&cli.StringFlag{Name: "name", Usage: "the intercept's name (default WORKLOAD-PORT)"},
			&cli.GenericFlag{Name: "http-header", Value: &repeated{}, Usage: "only requests with this header: NAME=VALUE (exact), NAME=~REGEX (RE2, the whole value), or auto (only tp's own header); repeatable, all must match"},
			&cli.BoolFlag{Name: "wiretap", Usage: "get copies (of the requests the filter matches, or of every connection) while the app still answers the callers; beside any other intercept"},
			&cli.StringFlag{Name: "http-path", Usage: "only requests whose path is: /PREFIX (starts so), =/PATH (exactly), ~REGEX (RE2, the whole path); the query is not part of it"},
			&cli.StringFlag{Name: "env-file", Usage: "write the app container's environment here (KEY=value lines)"},
			&cli.StringFlag{Name: "env-json", Usage: "write the app container's environment here (a JSON object)"},
			&cli.BoolFlag{Name: "mount", Value: true, Usage: "with -- CMD: write the container's ConfigMap, Secret, downwardAPI and projected volumes under $TP_ROOT"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the change the intercept makes to the workload, and change nothing"},
			&cli.StringFlag{Name: "manager-namespace", Value: deploy.DefaultNamespace, Usage: "where tp install put the traffic manager"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "how long to wait for the agents to be ready"},
			outputFlag(),
		),
		Action: func(c *cli.Context) error {
			return newClient(c).Intercept(c.Context, client.InterceptConfig{
				Workload: configcmd.Workload(c), Command: commandAfter(c.Args().Tail()),
				Ports: c.Generic("port").(*repeated).values, Name: c.String("name"), EnvFile: c.String("env-file"), EnvJSON: c.String("env-json"),
				DryRun: c.Bool("dry-run"), ManagerNamespace: c.String("manager-namespace"), Timeout: c.Duration("timeout"),
				HTTPHeaders: c.Generic("http-header").(*repeated).values, HTTPPath: c.String("http-path"), Wiretap: c.Bool("wiretap"), Output: c.String("output"),
				NoMount: !c.Bool("mount"),
			})
		},
	}
}

// repeated is a flag that may be given many times, each value whole: a regular expression
// may hold commas, which a StringSliceFlag would split it at.
type repeated struct{ values []string }

func (r *repeated) Set(v string) error { r.values = append(r.values, v); return nil }
func (r *repeated) String() string     { return strings.Join(r.values, " ") }

// commandAfter is the command given after the workload, past its "--".
func commandAfter(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
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
			return newClient(c).Leave(c.Context, c.Args().First())
		},
	}
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list the workloads tp's agent is in, and who intercepts them",
		Flags: append(kubeFlags(), &cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "every namespace"},
			outputFlag()),
		Action: func(c *cli.Context) error {
			return newClient(c).List(c.Context, client.ListConfig{AllNamespaces: c.Bool("all-namespaces"), Output: c.String("output")})
		},
	}
}
