package main

import (
	"bytes"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
	"github.com/tpdev/tp/cmd/internal/cliargs"
	"github.com/tpdev/tp/remote/laptop/client"
)

func TestVersionPrintsVersionAndImage(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	if err := app.Run([]string{"tp", "version"}); err != nil {
		t.Fatalf("tp version: %v", err)
	}
	for _, want := range []string{"tp " + buildinfo.Version, "cluster image: " + buildinfo.Image, "\nmanager: unknown (cannot reach the cluster: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("tp version printed %q, want it to contain %q", out.String(), want)
		}
	}
}

func TestUnknownCommandFails(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run([]string{"tp", "conect"})
	if err == nil || !strings.Contains(err.Error(), `unknown command "conect"`) || exitCode(err) != 2 {
		t.Fatalf("tp conect: got error %v, want one naming the unknown command (output %q)", err, out.String())
	}
}

func TestInterspersedFlags(t *testing.T) {
	app := newApp()
	got := cliargs.Interspersed(app, []string{"tp", "intercept", "web-app", "--port", "8080:80", "-n", "ns", "--dry-run", "--", "sh", "-c", "echo --port"})
	want := []string{"tp", "intercept", "--port", "8080:80", "-n", "ns", "--dry-run", "web-app", "--", "sh", "-c", "echo --port"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("interspersed:\n got %q\nwant %q", got, want)
	}
	if got := cliargs.Interspersed(app, []string{"tp", "run", "--vif=on", "--", "ls", "-l"}); strings.Join(got, " ") != "tp run --vif=on -- ls -l" {
		t.Fatalf("run args changed: %q", got)
	}
}

// run runs tp with args as main does (flags after arguments included), capturing its
// output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Setenv("TP_HOME", t.TempDir())
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(cliargs.Interspersed(app, append([]string{"tp"}, args...)))
	return out.String(), err
}

func TestUsageErrorsExitWith2(t *testing.T) {
	cases := [][]string{
		{"--no-such-flag"},
		{"no-such-command"},
		{"--context", "x", "no-such-command"},
		{"connect", "--lanes", "many"},
		{"run", "--timeout", "soon", "--", "true"},
		{"intercept", "--port"},
	}
	for _, cmd := range newApp().VisibleCommands() { // tp __complete takes any words
		cases = append(cases, []string{cmd.Name, "--no-such-flag"})
	}
	for _, args := range cases {
		out, err := run(t, args...)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("tp %s: %v (exit %d), want a usage error: exit 2 (output %q)", strings.Join(args, " "), err, exitCode(err), out)
			continue
		}
		help := "tp --help"
		if cmd := newApp().Command(args[0]); cmd != nil {
			help = "tp " + cmd.Name + " --help"
		}
		if !strings.Contains(err.Error(), help) {
			t.Errorf("tp %s: %q, want it to point at %s", strings.Join(args, " "), err, help)
		}
		if args[len(args)-1] == "--no-such-flag" && !strings.HasPrefix(err.Error(), "unknown flag --no-such-flag;") {
			t.Errorf("tp %s: %q, want it to name the flag as typed", strings.Join(args, " "), err)
		}
	}
}

// chosenCluster runs tp with args, the named command replaced by one that reports the
// cluster the command line chose.
func chosenCluster(t *testing.T, command string, args ...string) client.KubeFlags {
	t.Helper()
	app := newApp()
	var kf client.KubeFlags
	app.Command(command).Action = func(c *cli.Context) error {
		kf = newClient(c).Kube
		return nil
	}
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	if err := app.Run(cliargs.Interspersed(app, append([]string{"tp"}, args...))); err != nil {
		t.Fatalf("tp %s: %v", strings.Join(args, " "), err)
	}
	return kf
}

func TestKubeFlagsBeforeTheCommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want client.KubeFlags
	}{
		{[]string{"--context", "x", "status"}, client.KubeFlags{Context: "x"}},
		{[]string{"status", "--context", "x"}, client.KubeFlags{Context: "x"}},
		{[]string{"--kubeconfig", "/k", "-n", "a", "list"}, client.KubeFlags{Kubeconfig: "/k", Namespace: "a"}},
		{[]string{"--context=x", "--namespace", "a", "intercept", "web-app", "--namespace", "b", "--port", "8080"}, client.KubeFlags{Context: "x", Namespace: "b"}},
		{[]string{"--context", "x", "run", "--", "ls", "--context", "y"}, client.KubeFlags{Context: "x"}},
	} {
		if got := chosenCluster(t, tt.args[slices.IndexFunc(tt.args, isCommand)], tt.args...); got != tt.want {
			t.Errorf("tp %s: cluster %+v, want %+v", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	if out, err := run(t, "--context", "x", "status"); err != nil || !strings.Contains(out, "not connected") {
		t.Errorf("tp --context x status: %v, %q", err, out)
	}
}

func isCommand(s string) bool { return newApp().Command(s) != nil }

func TestInterspersedAfterAppFlags(t *testing.T) {
	app := newApp()
	got := cliargs.Interspersed(app, []string{"tp", "--context", "x", "-n=ns", "intercept", "web-app", "--port", "8080", "--", "sh", "--port"})
	want := []string{"tp", "--context", "x", "-n=ns", "intercept", "--port", "8080", "web-app", "--", "sh", "--port"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("interspersed:\n got %q\nwant %q", got, want)
	}
}
