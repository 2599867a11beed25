package workload

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// WhoMethod is the one method of the gRPC service the workload (and the e2e suites' laptop
// servers) answer on their HTTP port, over HTTP/2 cleartext: it answers the server's name,
// so a test tells which server a call reached. The service is written out by hand: the
// module has no generated code.
const WhoMethod = "/tp.test.Who/Name"

// who is WhoMethod's service, answering name.
func who(name string) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "tp.test.Who",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Name", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(wrapperspb.StringValue)); err != nil {
				return nil, err
			}
			return wrapperspb.String(name), nil
		}}},
	}
}

// WithGRPC is h that also answers gRPC calls (HTTP/2, application/grpc) of WhoMethod with
// name; serve it with NewServer for HTTP/2 cleartext.
func WithGRPC(name string, h http.Handler) http.Handler {
	g := grpc.NewServer()
	g.RegisterService(who(name), struct{}{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// NewServer is an HTTP server for h that speaks HTTP/1.1 and, in cleartext, HTTP/2 with
// prior knowledge (as gRPC clients do).
func NewServer(h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: h, Protocols: p}
}
