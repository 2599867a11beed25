package client

import (
	"bytes"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/shell"
)

const secret = "s3cret:pw" // in every test credential, to check no error or output shows it

func TestProxyCredentials(t *testing.T) {
	want := &localproxy.Credentials{User: "alice", Password: secret}
	tests := []struct {
		name, file, env string
		want            *localproxy.Credentials
		err             string
	}{
		{name: "none"},
		{name: "env", env: "alice:" + secret, want: want},
		{name: "file", file: "alice:" + secret + "\n", want: want},
		{name: "file without newline", file: "alice:" + secret, want: want},
		{name: "file with CRLF", file: "alice:" + secret + "\r\n", want: want},
		{name: "file wins over env", file: "alice:" + secret + "\n", env: "bob:other", want: want},
		{name: "env without colon", env: "alice" + strings.ReplaceAll(secret, ":", ""),
			err: `TP_PROXY_CREDENTIALS: want user:password, and there is no ":"`},
		{name: "env without user", env: ":" + secret, err: "TP_PROXY_CREDENTIALS: the user is empty"},
		{name: "env without password", env: "alice:", err: "TP_PROXY_CREDENTIALS: the password is empty"},
		{name: "env too long", env: "alice:" + strings.Repeat("x", 256), err: "the password is 256 bytes long; SOCKS5 allows at most 255"},
		{name: "file with two lines", file: "alice:" + secret + "\n\n", err: "want user:password on one line"},
		{name: "empty file", file: "\n", err: `--proxy-credentials-file `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := ""
			if tt.file != "" {
				file = writeFile(t, tt.file)
			}
			got, err := proxyCredentials(file, tt.env)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, %v; want an error with %q", got, err, tt.err)
				}
				if exitCode(err) != 2 {
					t.Errorf("exit code %d, want 2 (the user's to fix)", exitCode(err))
				}
				if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), strings.ReplaceAll(secret, ":", "")) {
					t.Errorf("the error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	_, err := proxyCredentials(filepath.Join(t.TempDir(), "missing"), "")
	if err == nil || !strings.Contains(err.Error(), "--proxy-credentials-file: open ") || exitCode(err) != 2 {
		t.Errorf("missing file: %v, want a user error naming the flag and the file", err)
	}
}

// parseConnect checks tp connect's defaults with args set over them, as the command does,
// without connecting: args are flag, value pairs of the connect flags these tests use.
func parseConnect(t *testing.T, args ...string) (Options, error) {
	t.Helper()
	cfg := ConnectConfig{Name: "default", Listen: "127.0.0.1:1080", ManagerNamespace: "tp-system", Transport: "auto", Lanes: DefaultLanes, Timeout: 30 * time.Second}
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--listen":
			cfg.Listen = args[i+1]
		case "--dns-listen":
			cfg.DNSListen = args[i+1]
		case "--proxy-credentials-file":
			cfg.CredentialsFile = args[i+1]
		default:
			t.Fatalf("parseConnect: %s is not among the flags it knows", args[i])
		}
	}
	return cfg.Options(os.Getenv, nil)
}

func TestConnectListenNeedsCredentials(t *testing.T) {
	t.Setenv(CredentialsEnv, "")
	for _, listen := range []string{"0.0.0.0:1080", "[::]:1080", "192.168.1.10:1080", "[fd00::1]:1080", "[::ffff:10.0.0.1]:1080"} {
		_, err := parseConnect(t, "--listen", listen)
		want := "--listen " + listen + " is reachable from other machines: set TP_PROXY_CREDENTIALS=user:password " +
			"(or --proxy-credentials-file) so that the proxy asks for them"
		if err == nil || err.Error() != want || exitCode(err) != 2 {
			t.Errorf("--listen %s without credentials: %v, want the user error %q", listen, err, want)
		}
	}
	for _, listen := range []string{"127.0.0.1:1080", "127.0.0.2:1080", "[::1]:1080", "[::ffff:127.0.0.1]:1080"} {
		o, err := parseConnect(t, "--listen", listen)
		if err != nil || o.creds != nil {
			t.Errorf("--listen %s: %v, creds %v; want a loopback proxy without credentials", listen, err, o.creds)
		}
	}
}

func TestConnectCredentialsFromEnv(t *testing.T) {
	t.Setenv(CredentialsEnv, "alice:"+secret)
	for _, listen := range []string{"0.0.0.0:1080", "127.0.0.1:1080"} {
		o, err := parseConnect(t, "--listen", listen)
		if err != nil {
			t.Fatal(err)
		}
		if o.creds == nil || o.creds.User != "alice" || o.creds.Password != secret {
			t.Fatalf("--listen %s: creds %v, want TP_PROXY_CREDENTIALS's (enforced on loopback too)", listen, o.creds)
		}
		// The daemon inherits the environment; the password is not on its command line.
		if args := strings.Join(DaemonArgs(KubeFlags{}, o.ConnectConfig), " "); strings.Contains(args, secret) || strings.Contains(args, CredentialsFileFlag) {
			t.Errorf("daemon args %q", args)
		}
	}
	t.Setenv(CredentialsEnv, "alice")
	if _, err := parseConnect(t, "--listen", "0.0.0.0:1080"); err == nil || !strings.Contains(err.Error(), "TP_PROXY_CREDENTIALS: want user:password") {
		t.Errorf("malformed TP_PROXY_CREDENTIALS: %v", err)
	}
}

func TestExportsAndNoteLeaveOutCredentials(t *testing.T) {
	var exports, note bytes.Buffer
	noteCredentials(&note, "0.0.0.0:1080")
	_ = printExports(&exports, shell.Posix, control.Info{Listen: "0.0.0.0:1080"})
	if !strings.Contains(note.String(), "TP_PROXY_CREDENTIALS") || !strings.Contains(note.String(), "socks5h://USER:PASSWORD@127.0.0.1:1080") {
		t.Errorf("note %q", note.String())
	}
	// A wildcard listener is dialed on loopback (dialing 0.0.0.0 fails on Windows).
	if !strings.Contains(exports.String(), "socks5h://127.0.0.1:1080") || strings.Contains(exports.String(), "@") {
		t.Errorf("exports %q", exports.String())
	}
	exports.Reset()
	_ = printExports(&exports, shell.Posix, control.Info{Listen: "[::]:1080"})
	if !strings.Contains(exports.String(), "http://[::1]:1080") {
		t.Errorf("exports for [::]:1080: %q", exports.String())
	}
}

func TestClientAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:1080":    "127.0.0.1:1080",
		"0.0.0.0:1080":      "127.0.0.1:1080",
		"[::]:1080":         "[::1]:1080",
		"192.168.1.10:1080": "192.168.1.10:1080",
		"[::1]:1081":        "[::1]:1081",
		"not an address":    "not an address",
	} {
		if got := clientAddr(in); got != want {
			t.Errorf("clientAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProxyEnvCredentials(t *testing.T) {
	creds := &localproxy.Credentials{User: "al ice", Password: "p@ss/w:rd%"}
	env := envMap(proxyEnv([]string{"HOME=/h", "ALL_PROXY=old"}, "127.0.0.1:1080", route{creds: creds}))
	for _, name := range []string{"ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"} {
		u, err := url.Parse(env[name])
		if err != nil {
			t.Fatalf("%s=%q: %v", name, env[name], err)
		}
		pw, _ := u.User.Password()
		if u.Host != "127.0.0.1:1080" || u.User.Username() != creds.User || pw != creds.Password {
			t.Errorf("%s=%q does not carry the credentials to 127.0.0.1:1080", name, env[name])
		}
	}
	if strings.Contains(env["JAVA_TOOL_OPTIONS"], "p@ss") {
		t.Errorf("JAVA_TOOL_OPTIONS (printed by every JVM) holds the password: %q", env["JAVA_TOOL_OPTIONS"])
	}
	if env["HOME"] != "/h" {
		t.Errorf("HOME lost: %v", env)
	}

	plain := envMap(proxyEnv(nil, "127.0.0.1:1080", route{}))
	if plain["ALL_PROXY"] != "socks5h://127.0.0.1:1080" || plain["HTTP_PROXY"] != "http://127.0.0.1:1080" {
		t.Errorf("without credentials: %v", plain)
	}
}

func TestRunningProxyCredentials(t *testing.T) {
	shortHome(t)
	k := &Kube{Context: "ctx", Cluster: "https://api:6443", Namespace: "ns"}
	fakeDaemon(t, "shared", control.Info{Name: "shared", Context: k.Context, Cluster: k.Cluster, Namespace: k.Namespace,
		Listen: "0.0.0.0:1080", DNSListen: "127.0.0.1:1053", ProxyAuth: true})
	log := slog.New(slog.DiscardHandler)

	if _, _, ok, err := runningProxy(t.Context(), k, "", "", log); ok || err != nil {
		t.Errorf("without credentials: usable %v, %v; want tp run to open its own connection", ok, err)
	}
	info, creds, ok, err := runningProxy(t.Context(), k, "", "alice:"+secret, log)
	if !ok || err != nil || info.Name != "shared" || creds == nil || creds.Password != secret {
		t.Errorf("with TP_PROXY_CREDENTIALS: %v %v %v %v", info.Name, creds, ok, err)
	}
	file := writeFile(t, "alice:"+secret+"\n")
	if _, creds, ok, err := runningProxy(t.Context(), k, file, "", log); !ok || err != nil || creds == nil || creds.User != "alice" {
		t.Errorf("with --proxy-credentials-file: %v %v %v", creds, ok, err)
	}
	if _, _, _, err := runningProxy(t.Context(), k, "", "alice", log); err == nil || exitCode(err) != 2 {
		t.Errorf("malformed TP_PROXY_CREDENTIALS: %v, want a user error", err)
	}
	other := &Kube{Context: "ctx", Cluster: k.Cluster, Namespace: "other"}
	if _, _, ok, _ := runningProxy(t.Context(), other, "", "alice:"+secret, log); ok {
		t.Error("a connection to another namespace was used")
	}
}

func TestConnectDNSListensOnLoopbackOnly(t *testing.T) {
	t.Setenv(CredentialsEnv, "alice:"+secret)
	for _, dl := range []string{"0.0.0.0:1053", "[::]:1053", "10.0.0.5:53"} {
		_, err := parseConnect(t, "--dns-listen", dl)
		if err == nil || !strings.Contains(err.Error(), "DNS cannot ask for credentials") || exitCode(err) != 2 {
			t.Errorf("--dns-listen %s: %v, want a user error", dl, err)
		}
	}
	if _, err := parseConnect(t, "--dns-listen", "127.0.0.1:1053"); err != nil {
		t.Errorf("--dns-listen on loopback: %v", err)
	}
}
