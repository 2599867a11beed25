package localproxy

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/things-go/go-socks5"
)

// refuseOtherUser answers a client the Guard turned away (why) in the protocol its first
// byte names, so that its user reads why, and closes the connection.
func (s *Server) refuseOtherUser(fc *frontConn, first byte, why error) {
	s.otherUsers.Add(1)
	switch {
	case first == socks5Version:
		// The handshake runs to the request, which is answered 0x02 "not allowed by
		// ruleset": the nearest a SOCKS5 client has to "forbidden". ServeConn closes fc.
		_ = s.socksRefuse.ServeConn(fc)
	case 'A' <= first && first <= 'Z' || 'a' <= first && first <= 'z':
		refuseHTTP(fc, why)
	default:
		_ = fc.Close()
	}
}

// newSOCKSRefusal is a SOCKS5 server that refuses every request: it accepts any
// authentication (a refused client's password is not worth checking, and its reply
// should be the refusal, not "wrong password") and answers every command with 0x02.
func (s *Server) newSOCKSRefusal() *socks5.Server {
	return socks5.NewServer(
		socks5.WithAuthMethods([]socks5.Authenticator{
			socks5.NoAuthAuthenticator{},
			socks5.UserPassAuthenticator{Credentials: anyCredentials{}},
		}),
		socks5.WithResolver(passThroughResolver{}),
		socks5.WithRule(socks5.NewPermitNone()),
		socks5.WithLogger(socksLogger{s.log}),
	)
}

// refuseHTTP reads the client's request header and answers 403 with why in the body.
func refuseHTTP(fc *frontConn, why error) {
	defer fc.Close()
	req, err := http.ReadRequest(fc.br) // within the handshake deadline Serve set
	if err != nil {
		return
	}
	_ = req.Body.Close()
	body := "tp: " + why.Error() + "\n"
	resp := "HTTP/1.1 403 Forbidden\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"X-Content-Type-Options: nosniff\r\n" +
		"Proxy-Status: tp; error=http_request_denied\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	_ = fc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(fc, resp); err != nil {
		return
	}
	// Closing with unread bytes (a request body) sends a reset, which can destroy the
	// answer before the client reads it: end our side, and read what it still sends.
	_ = fc.CloseWrite()
	_ = fc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(fc, 1<<20))
}
