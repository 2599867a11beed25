package tunnel

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
)

// The tunnel's gRPC tuning, for its three ends: the laptop's lanes to the manager's client
// API (DialOptions), the manager serving them (ServerOptions), and an agent's connection to
// the manager's cluster port (AgentDialOptions, AgentServerOptions). Each value is set here
// once; transport credentials, dialers and handlers are the callers'.

const (
	// laptopStreamWindow and laptopConnWindow are what the laptop lets the manager send
	// ahead (downloads). Measured (make bench): with gRPC's estimated windows a download
	// stalled on flow control at about half of a raw port-forward's speed, because window
	// updates queue behind the data in the API server's and kubelet's buffers; a 32 MiB
	// stream window reaches it. Both sizes are set (setting one alone disables the
	// estimator). A local client that stops reading holds at most that much in tp's memory.
	laptopStreamWindow = 32 << 20
	laptopConnWindow   = 128 << 20
	// managerStreamWindow and managerConnWindow are what the manager lets each client send
	// ahead (uploads): smaller than the laptop's, because the manager's memory is shared by
	// every client.
	managerStreamWindow = 4 << 20
	managerConnWindow   = 16 << 20
	// ioBuffer is the read and write buffer of a tunnel connection on both ends (gRPC's
	// default: 32 KiB), set with the windows for bulk flows.
	ioBuffer = 256 << 10
	// managerReadBuffer is the manager's read buffer per connection: gRPC's default. Every
	// lane of every session holds one for its life, and the scale bench found the larger
	// ioBuffer there the most of an idle session's cost; what it reads is mostly frames of
	// 16 KiB or less (uploads, requests), which a 32 KiB buffer takes two at a time.
	managerReadBuffer = 32 << 10

	// laptopPing is how long a lane may be silent before the laptop pings the manager, and
	// laptopPingTimeout how long it waits for the answer: pings notice a port-forward that
	// went silent (laptop sleep, a dead kubelet stream).
	laptopPing        = 10 * time.Second
	laptopPingTimeout = 10 * time.Second
	// agentPing and agentPingTimeout are an agent's: it reaches the manager over the pod
	// network, not a port-forward, so an answer may be expected sooner.
	agentPing        = 10 * time.Second
	agentPingTimeout = 5 * time.Second
	// managerPing is how long a client API connection may be silent before the manager
	// pings it, and ServerKeepaliveTimeout how long it waits for the answer before it drops
	// the connection.
	managerPing            = 30 * time.Second
	ServerKeepaliveTimeout = 10 * time.Second
	// minClientPing is the shortest ping interval the manager accepts: clients ping every
	// 10 s to notice a dead port-forward; allow it, with room.
	minClientPing = 5 * time.Second

	// laptopMaxBackoff and agentMaxBackoff cap the wait between reconnection attempts, so
	// that lanes and agents are back within seconds of a restarted manager (gRPC's default
	// cap is 2 minutes).
	laptopMaxBackoff = 2 * time.Second
	agentMaxBackoff  = 3 * time.Second
	// minConnectTimeout bounds a lane's connection attempt (gRPC's default: 20 s): a
	// port-forward that does not connect by then is tried again sooner.
	minConnectTimeout = 10 * time.Second

	// MaxMessage bounds a message the manager receives. The largest a peer of tp's sends is
	// a Data frame or a Dial with early data, 64 KiB and a little; gRPC's default, 4 MiB,
	// is that much memory per stream for nothing.
	MaxMessage = 1 << 20
	// MaxHeaders bounds a request's headers: an agent's token is the largest, a kilobyte or
	// two (gRPC allows 16 MiB by default, net/http 1 MiB).
	MaxHeaders = 64 << 10
)

// backoffFrom is gRPC's default reconnection backoff with a quicker start (200 ms, not
// 1 s) and the given cap: tp's peers are a port-forward or a pod network away.
func backoffFrom(maxDelay time.Duration) backoff.Config {
	return backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxDelay}
}

// DialOptions are the laptop's options for a lane to the manager's client API.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(laptopStreamWindow), grpc.WithInitialConnWindowSize(laptopConnWindow),
		grpc.WithWriteBufferSize(ioBuffer), grpc.WithReadBufferSize(ioBuffer),
		experimental.WithBufferPool(BufferPool()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec())),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: laptopPing, Timeout: laptopPingTimeout, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffFrom(laptopMaxBackoff), MinConnectTimeout: minConnectTimeout}),
		grpc.WithIdleTimeout(0), // stay connected: an idle tunnel must still notice it broke
	}
}

// AgentDialOptions are an agent's options for its connection to the manager's cluster
// port. An agent's flows are the manager's to pace: it keeps gRPC's windows and buffers.
func AgentDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: agentPing, Timeout: agentPingTimeout, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffFrom(agentMaxBackoff)}),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec())),
	}
}

// ServerOptions are the manager's options for its client API, which serves the laptops'
// lanes on connections of its own.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(managerStreamWindow), grpc.InitialConnWindowSize(managerConnWindow),
		// The write buffer goes back to a pool between writes: an idle lane holds none.
		grpc.WriteBufferSize(ioBuffer), grpc.ReadBufferSize(managerReadBuffer), grpc.SharedWriteBuffer(true),
		experimental.BufferPool(BufferPool()),
		grpc.ForceServerCodecV2(Codec()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minClientPing, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: managerPing, Timeout: ServerKeepaliveTimeout}),
		grpc.MaxRecvMsgSize(MaxMessage),
		grpc.MaxHeaderListSize(MaxHeaders),
	}
}

// AgentServerOptions are the manager's options for the agents' API. Served through
// net/http, it takes no connection options: the cluster port's http.Server bounds
// connections and headers (with MaxHeaders).
func AgentServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec()),
		grpc.MaxRecvMsgSize(MaxMessage),
	}
}
