package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/cliargs"
	"github.com/tpdev/tp/cmd/internal/configcmd"
	"github.com/tpdev/tp/remote/laptop/client"
)

// configFiles makes a user file (through XDG_CONFIG_HOME and HOME) and a project whose
// tp.yaml is two folders above the current one.
func configFiles(t *testing.T, user, project string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	t.Setenv("TP_CONFIG", "")
	t.Setenv("TP_DAEMON", "")
	t.Setenv(client.UpstreamProxyEnv, "")
	for path, src := range map[string]string{filepath.Join(dir, "xdg", "tp", "config.yaml"): user, filepath.Join(dir, "proj", "tp.yaml"): project} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sub := filepath.Join(dir, "proj", "src", "app")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
}

// runWith runs tp in-process, the command's Action replaced by action, and returns the
// error and what it printed.
func runWith(t *testing.T, command string, action cli.ActionFunc, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	for _, c := range app.Commands {
		if c.Name == command && action != nil {
			c.Action = action
		}
	}
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(cliargs.Interspersed(app, append([]string{"tp"}, args...)))
	return out.String(), err
}

const (
	testUserFile = `connect:
  listen: 127.0.0.1:2080
  lanes: 3
  also-proxy: [10.9.0.0/16, 10.8.0.0/16]
  allow-other-users: true
`
	testProjectFile = `version: 1
namespace: shop
intercepts:
  web-app:
    workload: deploy/web-app
    ports: ["8080:http"]
    http-header: ["x-dev=auto", "x-a=~a,b"]
    env-file: .env.cluster
run:
  vif: "off"
  transport: spdy
`
)

func TestConfigFilesReachConnect(t *testing.T) {
	configFiles(t, testUserFile, testProjectFile)
	var got client.ConnectConfig
	grab := func(c *cli.Context) error { got = connectConfig(c); return nil }
	if out, err := runWith(t, "connect", grab, "connect", "--lanes", "5"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := client.ConnectConfig{Name: "default", Listen: "127.0.0.1:2080", ManagerNamespace: "tp-system",
		AlsoProxy: []string{"10.9.0.0/16", "10.8.0.0/16"}, Transport: "auto", Lanes: 5, Timeout: got.Timeout, AllowOtherUsers: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tp connect --lanes 5:\n got %+v\nwant %+v", got, want)
	}
	// The daemon's command line is complete (client.DaemonArgs): it reads no file.
	t.Setenv("TP_DAEMON", "1")
	if out, err := runWith(t, "connect", grab, "connect"); err != nil || got.Listen != "127.0.0.1:1080" || got.AllowOtherUsers {
		t.Errorf("the daemon took the file's values: %+v, %v (%s)", got, err, out)
	}
}

func TestConfigFilesReachInterceptAndRun(t *testing.T) {
	configFiles(t, testUserFile, testProjectFile)
	wd, _ := os.Getwd()
	envFile := filepath.Join(wd, "..", "..", ".env.cluster") // the project's folder's, not this one's
	envFile = filepath.Clean(envFile)
	var got client.InterceptConfig
	var ns string
	grab := func(c *cli.Context) error {
		got = client.InterceptConfig{Workload: configcmd.Workload(c), Ports: c.Generic("port").(*repeated).values,
			HTTPHeaders: c.Generic("http-header").(*repeated).values, EnvFile: c.String("env-file")}
		ns = newClient(c).Kube.Namespace
		return nil
	}
	for _, tc := range []struct {
		args   []string
		want   client.InterceptConfig
		wantNS string
	}{
		{[]string{"intercept"}, client.InterceptConfig{Workload: "deploy/web-app", Ports: []string{"8080:http"}, HTTPHeaders: []string{"x-dev=auto", "x-a=~a,b"}, EnvFile: envFile}, "shop"},
		{[]string{"intercept", "web-app"}, client.InterceptConfig{Workload: "deploy/web-app", Ports: []string{"8080:http"}, HTTPHeaders: []string{"x-dev=auto", "x-a=~a,b"}, EnvFile: envFile}, "shop"},
		{[]string{"-n", "other", "intercept", "web-app", "--port", "9090"}, client.InterceptConfig{Workload: "deploy/web-app", Ports: []string{"9090"}, HTTPHeaders: []string{"x-dev=auto", "x-a=~a,b"}, EnvFile: envFile}, "other"},
		{[]string{"intercept", "api", "--port", "9090"}, client.InterceptConfig{Workload: "api", Ports: []string{"9090"}}, "shop"},
	} {
		got, ns = client.InterceptConfig{}, ""
		if out, err := runWith(t, "intercept", grab, tc.args...); err != nil {
			t.Fatalf("tp %q: %v: %s", tc.args, err, out)
		}
		if !reflect.DeepEqual(got, tc.want) || ns != tc.wantNS {
			t.Errorf("tp %q:\n got %+v in %q\nwant %+v in %q", tc.args, got, ns, tc.want, tc.wantNS)
		}
	}
	out, err := runWith(t, "intercept", grab, "intercept", "api")
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `tp.yaml:3: unknown intercept "api"; defined: web-app`) {
		t.Errorf("tp intercept api: %v (%s)", err, out)
	}

	var run client.RunConfig
	grabRun := func(c *cli.Context) error {
		run = client.RunConfig{VIF: c.String("vif"), Transport: c.String("transport"), ManagerNamespace: c.String("manager-namespace")}
		return nil
	}
	if out, err := runWith(t, "run", grabRun, "run", "--vif", "on", "--", "true"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := (client.RunConfig{VIF: "on", Transport: "spdy", ManagerNamespace: "tp-system"}); !reflect.DeepEqual(run, want) {
		t.Errorf("tp run --vif on: %+v, want %+v", run, want)
	}
}

func TestConfigErrorsExitTwo(t *testing.T) {
	configFiles(t, "connect:\n  listen: x\n  lanes: many\n", "intercepts:\n  web:\n    prots: [\"1\"]\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"connect"}, `xdg/tp/config.yaml:3:10: lanes: wrong type: want an integer, got "many"`},
		{[]string{"config", "view"}, `xdg/tp/config.yaml:3:10: lanes`},
		{[]string{"status"}, ""}, // tp status reads no file
	} {
		out, err := runWith(t, "", nil, tc.args...)
		if tc.want == "" {
			continue
		}
		if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tp %q: %v (%s), want exit status 2 and %q", tc.args, err, out, tc.want)
		}
	}
	t.Setenv("TP_CONFIG", os.DevNull)
	_, err := runWith(t, "intercept", nil, "intercept")
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `proj/tp.yaml:3:5: unknown key "prots" in intercepts.web; valid keys: `) {
		t.Errorf("tp intercept: %v", err)
	}
}

func TestConfigView(t *testing.T) {
	configFiles(t, testUserFile, testProjectFile)
	out, err := runWith(t, "", nil, "-n", "flagged", "config", "view", "-o", "yaml")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, w := range []string{"listen: 127.0.0.1:2080 # ", "xdg/tp/config.yaml:2", "transport: auto # default",
		"namespace: flagged # flag", "transport: spdy # ", "proj/tp.yaml:11", "ports: ['8080:http'] # "} {
		if !strings.Contains(out, w) {
			t.Errorf("tp config view lacks %q:\n%s", w, out)
		}
	}
	if out, err := runWith(t, "", nil, "config", "view", "-o", "json"); err != nil || !strings.Contains(out, `"source": "default"`) {
		t.Errorf("-o json: %v\n%s", err, out)
	}
}
