package localproxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Credentials are the user and password every client must give when Config.Credentials
// is set, and what SOCKSDialer gives when its Credentials are set.
//
// A loopback-only proxy needs none: only this machine reaches it. A proxy that other
// machines reach would hand the cluster (as this user) to anyone on the network, so tp
// only listens beyond loopback with credentials.
type Credentials struct {
	User     string
	Password string
}

// maxCredentialLen is the longest user or password SOCKS5 can carry (RFC 1929: one
// length byte each).
const maxCredentialLen = 255

// Validate reports whether every client can give c: over SOCKS5 (RFC 1929: 1 to 255 bytes
// each) and over HTTP Basic (a user without ':'). Its messages never contain c's values.
func (c Credentials) Validate() error {
	switch {
	case c.User == "":
		return errors.New("the user is empty")
	case c.Password == "":
		return errors.New("the password is empty")
	case strings.Contains(c.User, ":"):
		return errors.New(`the user contains ":", which HTTP Basic authentication cannot carry`)
	case len(c.User) > maxCredentialLen:
		return fmt.Errorf("the user is %d bytes long; SOCKS5 allows at most %d", len(c.User), maxCredentialLen)
	case len(c.Password) > maxCredentialLen:
		return fmt.Errorf("the password is %d bytes long; SOCKS5 allows at most %d", len(c.Password), maxCredentialLen)
	}
	return nil
}

// String hides the password, so Credentials printed or logged by mistake leak nothing.
func (c Credentials) String() string { return fmt.Sprintf("user %q, password hidden", c.User) }

// GoString hides the password from %#v too.
func (c Credentials) GoString() string {
	return fmt.Sprintf("localproxy.Credentials{User: %q, Password: hidden}", c.User)
}

// credentialStore checks what a client gives against the Server's Credentials. Both sides
// are hashed to one length first, so subtle.ConstantTimeCompare's time does not even tell
// the lengths; user and password are always both compared, so the time does not tell
// which was wrong either; and an address that keeps guessing is turned away for a while
// (guessLimit). It is go-socks5's CredentialStore and the HTTP front end's check.
type credentialStore struct {
	user, password [sha256.Size]byte
	guesses        *guessLimit
}

func newCredentialStore(c Credentials) *credentialStore {
	return &credentialStore{user: sha256.Sum256([]byte(c.User)), password: sha256.Sum256([]byte(c.Password)), guesses: newGuessLimit()}
}

// Valid reports whether user and password are the Server's, given from clientAddr.
func (s *credentialStore) Valid(user, password, clientAddr string) bool {
	ok, _ := s.check(user, password, clientAddr)
	return ok
}

// check is Valid that also says, when clientAddr is turned away for guessing, for how long
// more (then user and password are not even compared).
func (s *credentialStore) check(user, password, clientAddr string) (bool, time.Duration) {
	if wait := s.guesses.wait(clientAddr); wait > 0 {
		return false, wait
	}
	u := sha256.Sum256([]byte(user))
	p := sha256.Sum256([]byte(password))
	userOK := subtle.ConstantTimeCompare(u[:], s.user[:])
	passwordOK := subtle.ConstantTimeCompare(p[:], s.password[:])
	ok := userOK&passwordOK == 1
	s.guesses.record(clientAddr, ok)
	return ok, 0
}

// proxyBasicAuth parses a Proxy-Authorization header of the Basic scheme (RFC 7617), as
// net/http's Request.BasicAuth does for Authorization.
func proxyBasicAuth(h http.Header) (user, password string, ok bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(h.Get("Proxy-Authorization")), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(raw), ":")
}

// httpAuthorized checks a proxy request's credentials when the Server asks for them, and
// answers 407 if they are missing or wrong. Proxy-Authorization is for tp alone: it is
// removed before the request goes anywhere.
func (s *Server) httpAuthorized(w http.ResponseWriter, r *http.Request) bool {
	if s.creds == nil {
		return true
	}
	_, given := r.Header["Proxy-Authorization"]
	user, password, ok := proxyBasicAuth(r.Header)
	r.Header.Del("Proxy-Authorization")
	if wait := s.creds.guesses.wait(r.RemoteAddr); wait > 0 {
		s.log.Info("http: rejected client", "client", r.RemoteAddr, "method", r.Method, "reason", "too many wrong passwords from its address", "for", wait.Round(time.Second))
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second).Seconds())+1))
		w.Header().Set("Connection", "close")
		writeText(w, http.StatusTooManyRequests, fmt.Sprintf("tp: too many wrong proxy passwords from this address; try again in %s.\n", wait.Round(time.Second)+time.Second))
		return false
	}
	if ok {
		if right, _ := s.creds.check(user, password, r.RemoteAddr); right {
			return true
		}
	}
	reason, body := "no Proxy-Authorization header", "tp: this proxy asks for a user and password."
	switch {
	case given && !ok:
		reason, body = "Proxy-Authorization is not Basic user:password", "tp: this proxy takes only Basic proxy authentication (a user and password)."
	case given:
		reason, body = "wrong user or password", "tp: wrong proxy user or password."
	}
	s.log.Info("http: rejected client", "client", r.RemoteAddr, "method", r.Method, "reason", reason)
	w.Header().Set("Proxy-Authenticate", `Basic realm="tp"`)
	if r.Method == http.MethodConnect {
		w.Header().Set("Connection", "close")
	}
	writeText(w, http.StatusProxyAuthRequired, body+
		" Give the ones tp connect was started with in the proxy URL, e.g. http://USER:PASSWORD@"+proxyAddrOf(r)+
		" (curl: --proxy-user USER:PASSWORD).\n")
	return false
}

// proxyAddrOf is the proxy's address as the client reached it (r.Host names the
// destination, not the proxy).
func proxyAddrOf(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return "HOST:PORT"
}
