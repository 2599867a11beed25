package dnsshim

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/tpdev/tp/remote"
)

// Dialer answers DNS in this process, for a front end in it (tp run's VIF, through
// netstack.Config.Dial): DialContext returns a conn to the shim, without a loopback port
// and without the peer check a port needs (the caller is this process). Over "udp" each
// Write is one query and each Read one answer, given room for a whole answer (64 KiB, as
// for a UDP socket); over "tcp" the conn carries length-prefixed messages (RFC 1035
// 4.2.2). The address is ignored. Queries count in Stats as any other.
func (s *Server) Dialer() remote.Dialer { return remote.DialFunc(s.dialInProcess) }

func (s *Server) dialInProcess(_ context.Context, network, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	switch network {
	case "udp", "udp4", "udp6":
		go s.servePipe(server)
	case "tcp", "tcp4", "tcp6":
		select {
		case s.conns <- struct{}{}:
		default:
			s.stats.dropped.Add(1)
			client.Close()
			server.Close()
			return nil, &remote.Error{Kind: remote.Failed, Msg: "dns shim: too many tcp connections"}
		}
		go func() {
			defer func() { <-s.conns }()
			s.serveConn(context.Background(), server)
		}()
	default:
		client.Close()
		server.Close()
		return nil, &remote.Error{Kind: remote.Failed, Msg: fmt.Sprintf("dns shim: no DNS over %q", network)}
	}
	return client, nil
}

// pipeAddr names the caller of an in-process conn in the log.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }

// servePipe answers the queries of an in-process "udp" conn until it is closed. net.Pipe
// hands each Write whole to a Read with room for it, so queries and answers stay one
// message each, as datagrams.
func (s *Server) servePipe(c net.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var wmu sync.Mutex // one answer on the pipe at a time
	defer wg.Wait()
	defer cancel()
	defer c.Close() // first: it unblocks answers waiting for a reader
	buf := make([]byte, 1<<16)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		s.goAnswer(ctx, &wg, buf[:n], pipeAddr{}, func(req []byte) []byte {
			return s.safeAnswer(ctx, req, false)
		}, func(resp []byte) error {
			wmu.Lock()
			defer wmu.Unlock()
			_, err := c.Write(resp)
			return err
		})
	}
}
