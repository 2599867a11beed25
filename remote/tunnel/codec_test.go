package tunnel

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// The codec's bytes are protobuf: the standard library reads what it writes and the
// other way round, for Data frames (its fast path) and every other message.
func TestCodecIsProtobuf(t *testing.T) {
	msgs := []proto.Message{
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: bytes.Repeat([]byte{7}, 70000)}},
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: []byte("x")}},
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: bytes.Repeat([]byte{1}, MaxChunk)}},
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: &tunnelpb.Dial{Network: "tcp", Address: "a:1"}}},
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_CloseWrite{CloseWrite: &tunnelpb.CloseWrite{}}},
		&tunnelpb.InfoResponse{Version: "v1", ServiceCidrs: []string{"10.96.0.0/16"}},
	}
	for _, m := range msgs {
		bs, err := Codec().Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		std, _ := proto.Marshal(m)
		if !bytes.Equal(bs.Materialize(), std) {
			t.Errorf("%T: codec bytes differ from protobuf's", m)
		}
		// Split the bytes the way HTTP/2 frames would, to exercise the multi-buffer path.
		var split mem.BufferSlice
		for i := 0; i < len(std); i += 16384 {
			split = append(split, mem.SliceBuffer(std[i:min(i+16384, len(std))]))
		}
		got := m.ProtoReflect().New().Interface()
		if err := Codec().Unmarshal(split, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, m) {
			t.Errorf("%T: round trip changed the message", m)
		}
	}
}
