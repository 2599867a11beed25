package client

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/remote"
)

// CredentialsEnv holds the proxy's USER:PASSWORD. It is preferred to a file and there is no
// flag for the password itself: a command line is visible to every user of the machine in
// ps, the environment is not, and the connection daemon inherits it.
const CredentialsEnv = "TP_PROXY_CREDENTIALS"

// CredentialsFileFlag names a file holding USER:PASSWORD, for those who keep secrets in
// files; its path, not its content, goes to the daemon's command line.
const CredentialsFileFlag = "proxy-credentials-file"

// proxyCredentials reads the credentials from file, else from env (the value of
// TP_PROXY_CREDENTIALS); neither set means none (nil). A file wins: it was named on this
// command line, the variable may only be left over in the shell.
func proxyCredentials(file, env string) (*localproxy.Credentials, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, remote.Errorf(remote.Usage, "--%s: %w", CredentialsFileFlag, err)
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
		return parseCredentials(fmt.Sprintf("--%s %s", CredentialsFileFlag, file), s)
	}
	if env != "" {
		return parseCredentials(CredentialsEnv, env)
	}
	return nil, nil
}

// parseCredentials parses USER:PASSWORD (the password may hold ':'); source names where it
// came from. Errors never repeat the value: it is a secret.
func parseCredentials(source, s string) (*localproxy.Credentials, error) {
	user, password, ok := strings.Cut(s, ":")
	if !ok {
		return nil, remote.Errorf(remote.Usage, "%s: want user:password, and there is no \":\"", source)
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, remote.Errorf(remote.Usage, "%s: want user:password on one line", source)
	}
	c := &localproxy.Credentials{User: user, Password: password}
	if err := c.Validate(); err != nil {
		return nil, remote.Errorf(remote.Usage, "%s: %w", source, err)
	}
	return c, nil
}

// requireCredentials refuses a proxy that other machines reach without credentials: anyone
// who can reach the port could use it to reach the cluster, as this user.
func requireCredentials(listen string, addr netip.AddrPort, creds *localproxy.Credentials) error {
	if creds != nil || addr.Addr().Unmap().IsLoopback() {
		return nil
	}
	return remote.Errorf(remote.Usage, "--listen %s is reachable from other machines: set %s=user:password (or --%s) so that the proxy asks for them",
		listen, CredentialsEnv, CredentialsFileFlag)
}

// noteCredentials tells the user that the exported proxy URLs lack the credentials the
// proxy asks for: they are not printed, since the output is meant for eval and may land
// in a terminal's scrollback or a log.
func noteCredentials(w io.Writer, listen string) {
	fmt.Fprintf(w, "tp: the proxy asks for the user and password from %s (or --%s); "+
		"the exported proxy URLs leave them out: give them to each client, e.g. ALL_PROXY=socks5h://USER:PASSWORD@%s\n",
		CredentialsEnv, CredentialsFileFlag, clientAddr(listen))
}

// clientAddr is where a client on this machine reaches a proxy listening on listen: a
// listener on the unspecified address (0.0.0.0, ::) is dialed on loopback, because
// dialing the unspecified address fails on Windows.
func clientAddr(listen string) string {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil || !ap.Addr().IsUnspecified() {
		return listen
	}
	loopback := netip.IPv6Loopback()
	if ap.Addr().Is4() {
		loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return netip.AddrPortFrom(loopback, ap.Port()).String()
}
