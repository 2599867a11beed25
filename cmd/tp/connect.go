package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/client"
)

func connectCommand() *cli.Command {
	return &cli.Command{
		Name:  "connect",
		Usage: "connect this machine to the cluster: a SOCKS5 + HTTP proxy (and a DNS server) on loopback",
		Description: `Starts a background connection (a daemon of your own user, no root) and prints the
variables to export (for your shell: --shell posix, fish, powershell, cmd or json). Cluster
names (web-app, web-app.other-ns, *.svc.cluster.local), ClusterIPs and pod IPs go through the
tunnel; everything else goes where it went without tp: through the proxy that HTTPS_PROXY,
HTTP_PROXY or ALL_PROXY named when tp connect ran (or --upstream-proxy), except what NO_PROXY
excludes, which is dialed directly. The exported NO_PROXY keeps your entries.

   eval "$(tp connect)"; curl web-app
   tp connect --shell fish | source
   ALL_PROXY=socks5h://127.0.0.1:1080 curl http://web-app.default
   HTTPS_PROXY=http://proxy.corp:8080 NO_PROXY=.corp tp connect

Browsers and other tools that take a proxy auto-config (PAC) URL: http://127.0.0.1:1080/proxy.pac
(or a file: --pac FILE). tp env prints the variables of a running connection again.

The proxy listens on loopback, where only this machine reaches it; on Linux only your own
user may use it and its DNS port (tp asks the kernel who each local client is and refuses
other users; --allow-other-users turns that off). To let other machines use it, give it credentials that every client must then send (SOCKS5 username/password, HTTP
Proxy-Authorization: Basic):

   TP_PROXY_CREDENTIALS=user:password tp connect --listen 0.0.0.0:1080
   ALL_PROXY=socks5h://user:password@laptop:1080 curl http://web-app.default

The connect section of the user's configuration file ($TP_CONFIG, else tp/config.yaml in
$XDG_CONFIG_HOME or ~/.config; %AppData% on Windows) gives the flags not given here their
values. tp config view shows them.`,
		Flags: append(kubeFlags(),
			&cli.StringFlag{Name: "name", Value: "default", Usage: "session name; a second, independent connection needs its own (and its own --listen)"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:1080", Usage: "address of the SOCKS5 + HTTP proxy (one port serves both); beyond loopback only with proxy credentials"},
			proxyCredentialsFlag("file holding USER:PASSWORD that proxy clients must give (default: $"+client.CredentialsEnv+"); needed for a --listen other machines reach"),
			&cli.StringFlag{Name: "dns-listen", Usage: "also serve cluster DNS here (UDP and TCP), e.g. 127.0.0.1:1053"},
			&cli.StringFlag{Name: "manager-namespace", Value: deploy.DefaultNamespace, Usage: "where tp install put the traffic manager"},
			&cli.StringSliceFlag{Name: "also-proxy", Usage: "send this CIDR through the tunnel too (repeatable)"},
			&cli.StringSliceFlag{Name: "never-proxy", Usage: "never send this CIDR through the tunnel (repeatable)"},
			&cli.StringFlag{Name: "transport", Value: "auto", Usage: "port-forward transport: auto (WebSocket, falling back to SPDY), websocket or spdy"},
			&cli.IntFlag{Name: "lanes", Value: client.DefaultLanes, Usage: client.LanesUsage()},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "how long to wait for the connection"},
			&cli.BoolFlag{Name: "foreground", Usage: "stay attached instead of leaving a background daemon (Ctrl-C ends it)"},
			&cli.BoolFlag{Name: "debug", Usage: "log every failed dial"},
			&cli.StringFlag{Name: "upstream-proxy", EnvVars: []string{client.UpstreamProxyEnv}, Usage: "send destinations outside the cluster through this proxy (http://, https://, socks5:// or socks5h://, credentials in the URL), instead of the one HTTPS_PROXY/HTTP_PROXY/ALL_PROXY name; none: dial them directly"},
			&cli.StringFlag{Name: "upstream-no-proxy", Usage: "destinations dialed directly rather than through the upstream proxy (NO_PROXY's form: .corp,10.0.0.0/8); default: NO_PROXY"},
			&cli.BoolFlag{Name: "print-env", Value: true, Usage: "print the variables to export (--print-env=false: only connect)"},
			shellFlag(),
			&cli.StringFlag{Name: "pac", Usage: "also write the proxy auto-config file for browsers here (it is served at http://LISTEN/proxy.pac too)"},
			&cli.BoolFlag{Name: "allow-other-users", Usage: "let every user of this machine use the proxy and DNS ports, which carry your cluster rights (Linux serves only you unless given this; needed where the kernel cannot say who a client is: no sock_diag)"},
		),
		Action: func(c *cli.Context) error {
			cl := newClient(c)
			cl.Log = client.NewLog(c.App.ErrWriter, c.Bool("debug"), false)
			return cl.Connect(c.Context, connectConfig(c), client.ExportConfig{Shell: c.String("shell"), Print: c.Bool("print-env"), PACFile: c.String("pac")})
		},
	}
}

// connectConfig is tp connect's flags, as given (the daemon gets them back through
// client.DaemonArgs).
func connectConfig(c *cli.Context) client.ConnectConfig {
	return client.ConnectConfig{
		Name: c.String("name"), Listen: c.String("listen"), DNSListen: c.String("dns-listen"),
		ManagerNamespace: c.String("manager-namespace"),
		AlsoProxy:        c.StringSlice("also-proxy"), NeverProxy: c.StringSlice("never-proxy"),
		Transport: c.String("transport"), Lanes: c.Int("lanes"), Timeout: c.Duration("timeout"),
		Foreground: c.Bool("foreground"), Debug: c.Bool("debug"), AllowOtherUsers: c.Bool("allow-other-users"),
		CredentialsFile: c.String(client.CredentialsFileFlag),
		UpstreamProxy:   c.String("upstream-proxy"), UpstreamNoProxy: c.String("upstream-no-proxy"),
	}
}

func shellFlag() cli.Flag {
	return &cli.StringFlag{Name: "shell", Usage: "print the variables for this shell: posix, fish, powershell, cmd or json (default: from $SHELL; PowerShell on Windows)"}
}

func envCommand() *cli.Command {
	return &cli.Command{
		Name:      "env",
		Usage:     "print the variables that send a shell's programs through a running connection",
		ArgsUsage: " ",
		Description: `The same variables tp connect printed: the proxy for cluster destinations, your NO_PROXY
kept (less entries that would skip tp for cluster names), and NODE_USE_ENV_PROXY for Node.js.

   eval "$(tp env)"
   tp env --shell fish | source
   tp env --shell powershell | Invoke-Expression
   tp env --shell json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Value: "default", Usage: "the session"},
			shellFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return remote.Errorf(remote.Usage, "tp env takes no arguments, got %q", c.Args().Slice())
			}
			return newClient(c).Env(c.Context, c.String("name"), c.String("shell"))
		},
	}
}

func proxyCredentialsFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: client.CredentialsFileFlag, Usage: usage}
}
