package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/cmd/internal/cliargs"
	"github.com/tpdev/tp/remote/laptop/client"
)

const secret = "s3cret:pw" // in every test credential, to check no error or output shows it

// parseConnect parses tp connect's flags as the real command does, without connecting.
func parseConnect(t *testing.T, args ...string) (client.KubeFlags, client.ConnectConfig) {
	t.Helper()
	cmd := connectCommand()
	var kf client.KubeFlags
	var cfg client.ConnectConfig
	cmd.Action = func(c *cli.Context) error {
		kf, cfg = newClient(c).Kube, connectConfig(c)
		return nil
	}
	app := newApp()
	app.Commands = []*cli.Command{cmd}
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	if err := app.Run(cliargs.Interspersed(app, append([]string{"tp", "connect"}, args...))); err != nil {
		t.Fatalf("tp connect %q: %v", args, err)
	}
	return kf, cfg
}

// TestDaemonArgsRoundTrip fails when a field of client.ConnectConfig does not reach the
// daemon: every field is set, and the daemon's command line must give it back.
func TestDaemonArgsRoundTrip(t *testing.T) {
	var cfg client.ConnectConfig
	kf := client.KubeFlags{Kubeconfig: "/k/config", Context: "ctx", Namespace: "ns"}
	v := reflect.ValueOf(&cfg).Elem()
	for i := 0; i < v.NumField(); i++ {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch {
		case f.Type() == reflect.TypeOf(time.Duration(0)):
			f.Set(reflect.ValueOf(42 * time.Second))
		case f.Kind() == reflect.String:
			f.SetString("v-" + name)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			f.Set(reflect.ValueOf([]string{"a-" + name, "b-" + name}))
		case f.Kind() == reflect.Int:
			f.SetInt(int64(7 + i))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		default:
			t.Fatalf("ConnectConfig.%s is a %s: teach this test to set it", name, f.Type())
		}
	}
	args := client.DaemonArgs(kf, cfg)
	if args[0] != "connect" {
		t.Fatalf("daemon args %q: want tp connect", args)
	}
	if strings.Contains(strings.Join(args, " "), cfg.UpstreamProxy) {
		t.Errorf("daemon args %q show --upstream-proxy, which may hold a password", args)
	}
	for _, kv := range client.DaemonEnv(cfg) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	gotKube, got := parseConnect(t, args[1:]...)
	if gotKube != kf {
		t.Errorf("the daemon's cluster: %+v, want %+v (args %q)", gotKube, kf, args)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("the daemon's config:\n got %+v\nwant %+v\n(args %q)", got, cfg, args)
	}
}

func TestConnectCredentialsFromFile(t *testing.T) {
	t.Setenv(client.CredentialsEnv, "")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "creds"), []byte("alice:"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	_, cfg := parseConnect(t, "--listen", "0.0.0.0:1080", "--proxy-credentials-file", "creds")
	o, err := cfg.Options(func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	creds := o.Credentials()
	if creds == nil || creds.User != "alice" || creds.Password != secret {
		t.Fatalf("creds %v, want the file's", creds)
	}
	// The daemon gets the file's absolute path, to read it wherever it starts.
	args := client.DaemonArgs(client.KubeFlags{}, o.ConnectConfig)
	i := slices.Index(args, "--proxy-credentials-file")
	if i < 0 || i+1 >= len(args) || args[i+1] != filepath.Join(dir, "creds") {
		t.Errorf("daemon args %q, want --proxy-credentials-file %s", args, filepath.Join(dir, "creds"))
	}
	if strings.Contains(strings.Join(args, " "), secret) {
		t.Errorf("daemon args %q show the password", args)
	}
	// And the daemon, parsing those, gets the same credentials.
	t.Chdir(t.TempDir())
	_, dcfg := parseConnect(t, args[1:]...)
	d, err := dcfg.Options(func(string) string { return "" }, nil)
	if err != nil {
		t.Fatalf("daemon parsed: %v", err)
	}
	if dc := d.Credentials(); dc == nil || *dc != *creds {
		t.Errorf("daemon parsed %v", dc)
	}
}

func TestConnectRefusesOpenListenBeforeTouchingTheCluster(t *testing.T) {
	t.Setenv(client.CredentialsEnv, "")
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	t.Setenv("TP_HOME", t.TempDir())
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run([]string{"tp", "connect", "--listen", "0.0.0.0:1080"})
	if err == nil || !strings.Contains(err.Error(), "is reachable from other machines") || exitCode(err) != 2 {
		t.Fatalf("tp connect --listen 0.0.0.0:1080: %v (output %q)", err, out.String())
	}
}

func TestConnectHasNoPasswordFlag(t *testing.T) {
	for _, f := range append(connectCommand().Flags, runCommand().Flags...) {
		for _, name := range f.Names() {
			if strings.Contains(name, "password") || name == "proxy-credentials" || name == "proxy-user" {
				t.Errorf("flag --%s would put a secret on the command line, visible in ps", name)
			}
		}
	}
}
