package localproxy

import (
	"context"
	"io"
	"net"

	"github.com/tpdev/tp/remote"
)

// splice copies between client (reading from clientR, which may hold bytes already
// buffered from client) and dest with remote.Splice until both directions end. ctx ending
// (the client's connection closed, or Serve stopping) closes both too, because a splice
// blocked reading from a quiet destination would otherwise outlive its client.
func splice(ctx context.Context, client net.Conn, clientR io.Reader, dest net.Conn) {
	stop := context.AfterFunc(ctx, func() {
		_ = client.Close()
		_ = dest.Close()
	})
	defer stop()
	_, _, _ = remote.Splice(readerConn{Conn: client, r: clientR}, dest)
}

// readerConn is client with its reads taken from r.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c readerConn) CloseWrite() error          { return remote.CloseWrite(c.Conn) }
