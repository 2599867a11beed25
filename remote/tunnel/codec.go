package tunnel

import (
	"encoding/binary"
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// Codec is the gRPC codec both ends of the tunnel use (grpc.ForceCodecV2 on the client,
// grpc.ForceServerCodecV2 on the manager). Its wire format is plain protobuf, so any gRPC
// peer can talk to tp; it only takes a shorter way for Data frames, the bulk of all
// traffic: one copy each way instead of gRPC's zeroed 1 MiB buffer plus protobuf's copy
// and allocation per frame, and the received payloads are recycled by Conn.Read.
func Codec() encoding.CodecV2 { return codec{} }

type codec struct{}

// Name is "proto": the bytes are protobuf, and a peer using the standard codec agrees.
func (codec) Name() string { return "proto" }

// dataTag is the protobuf key of Frame.data: field 3, wire type 2 (length-delimited).
const dataTag = 3<<3 | 2

// payloadCap is the capacity of every received Data payload taken from payloads. No other
// slice a Conn sees has it (Write sends chunks capped to their length, at most MaxChunk),
// so Conn.Read recycles exactly these.
const payloadCap = MaxChunk + 64

var payloads = sync.Pool{New: func() any { b := make([]byte, payloadCap); return &b }}

func releasePayload(b []byte) {
	if cap(b) == payloadCap {
		b = b[:payloadCap]
		payloads.Put(&b)
	}
}

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	// A frame with fields this side does not know (a newer peer's, relayed) takes the
	// general path, which keeps them.
	if f, ok := v.(*tunnelpb.Frame); ok && len(f.ProtoReflect().GetUnknown()) == 0 {
		if d, ok := f.GetKind().(*tunnelpb.Frame_Data); ok {
			var hdr [1 + binary.MaxVarintLen64]byte
			hdr[0] = dataTag
			h := 1 + binary.PutUvarint(hdr[1:], uint64(len(d.Data)))
			buf := pool.Get(h + len(d.Data))
			copy(*buf, hdr[:h])
			copy((*buf)[h:], d.Data)
			return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
		}
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("tunnel codec: %T is not a protobuf message", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("tunnel codec: %w", err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*tunnelpb.Frame); ok {
		if payload, ok := dataPayload(data); ok {
			f.Kind = &tunnelpb.Frame_Data{Data: payload}
			return nil
		}
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("tunnel codec: %T is not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(pool)
	defer buf.Free()
	if err := proto.Unmarshal(buf.ReadOnlyData(), m); err != nil {
		return fmt.Errorf("tunnel codec: %w", err)
	}
	return nil
}

// dataPayload copies out the payload of a message that is exactly one Data field (what
// this codec and the standard one both write for a Data frame); ok is false for any other
// message, which then takes the general path.
func dataPayload(data mem.BufferSlice) ([]byte, bool) {
	total := data.Len()
	if total < 2 || total > payloadCap+1+binary.MaxVarintLen64 {
		return nil, false
	}
	var head [1 + binary.MaxVarintLen64]byte
	hn := copyPrefix(head[:], data)
	if head[0] != dataTag {
		return nil, false
	}
	n, vn := binary.Uvarint(head[1:hn])
	if vn <= 0 || uint64(total) != uint64(1+vn)+n || n > payloadCap {
		return nil, false
	}
	bp := payloads.Get().(*[]byte)
	payload := (*bp)[:n]
	skip := 1 + vn
	off := 0
	for _, b := range data {
		chunk := b.ReadOnlyData()
		if skip >= len(chunk) {
			skip -= len(chunk)
			continue
		}
		off += copy(payload[off:], chunk[skip:])
		skip = 0
	}
	return payload, true
}

func copyPrefix(dst []byte, data mem.BufferSlice) int {
	n := 0
	for _, b := range data {
		n += copy(dst[n:], b.ReadOnlyData())
		if n == len(dst) {
			break
		}
	}
	return n
}

var _ encoding.CodecV2 = codec{}
