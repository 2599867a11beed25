package tunnel

import (
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

// script is a stream that plays recorded frames, then ends.
type script struct{ frames []*tunnelpb.Frame }

func (s *script) Send(*tunnelpb.Frame) error { return nil }
func (s *script) Recv() (*tunnelpb.Frame, error) {
	if len(s.frames) == 0 {
		return nil, io.EOF
	}
	f := s.frames[0]
	s.frames = s.frames[1:]
	return f, nil
}

// FuzzFrame feeds arbitrary bytes to the frame decoder and then to both ends of the
// protocol: the manager's Accept (which must reject what no honest client sends) and a
// Conn reading them as data. Nothing may panic or hang.
func FuzzFrame(f *testing.F) {
	seeds := []*tunnelpb.Frame{
		{Kind: &tunnelpb.Frame_Dial{Dial: &tunnelpb.Dial{Network: "tcp", Address: "web-app:80", Namespace: "default"}}},
		{Kind: &tunnelpb.Frame_Dial{Dial: &tunnelpb.Dial{Network: "udp", Address: "10.96.0.10:53"}}},
		{Kind: &tunnelpb.Frame_DialResult{DialResult: &tunnelpb.DialResult{Code: tunnelpb.Code_CODE_REFUSED, Message: "refused"}}},
		{Kind: &tunnelpb.Frame_Data{Data: []byte("GET / HTTP/1.1\r\n\r\n")}},
		{Kind: &tunnelpb.Frame_CloseWrite{CloseWrite: &tunnelpb.CloseWrite{}}},
		{},
	}
	for _, s := range seeds {
		b, _ := proto.Marshal(s)
		f.Add(b, b)
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		var frames []*tunnelpb.Frame
		for _, b := range [][]byte{first, second} {
			fr := new(tunnelpb.Frame)
			if err := proto.Unmarshal(b, fr); err != nil {
				continue
			}
			frames = append(frames, fr)
		}
		if d, err := Accept(&script{frames: append([]*tunnelpb.Frame{}, frames...)}); err == nil {
			if ValidateDial(d) != nil {
				t.Fatalf("Accept passed a dial ValidateDial rejects: %v", d)
			}
		}
		for _, packet := range []bool{false, true} {
			c := NewConn(&script{frames: append([]*tunnelpb.Frame{}, frames...)}, func() {}, packet, Addr{}, Addr{})
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 512)
			for i := 0; i < 10; i++ {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			c.Close()
		}
	})
}

// FuzzCodec decodes arbitrary bytes as every message of tp's protocol (what the manager
// receives from clients and agents, and what they receive from it), the bytes split into
// buffers anywhere, as HTTP/2 frames split a message. The codec must agree with protobuf,
// its Data fast path included, and what it decodes must encode to bytes that decode the same.
func FuzzCodec(f *testing.F) {
	seeds := []proto.Message{
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: []byte("GET / HTTP/1.1\r\n\r\n")}},
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_Data{Data: []byte{}}},
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_Dial{Dial: &tunnelpb.Dial{Network: "tcp", Address: "web-app:80", Namespace: "default", Data: []byte("x")}}},
		&tunnelpb.Frame{Kind: &tunnelpb.Frame_CloseWrite{CloseWrite: &tunnelpb.CloseWrite{}}},
		&tunnelpb.ResolveRequest{Name: "web-app.other-ns", Namespace: "default", Qtype: 33},
		&tunnelpb.InterceptClientMsg{Kind: &tunnelpb.InterceptClientMsg_Create{Create: &tunnelpb.InterceptRequest{Name: "i", Namespace: "default", Kind: "Deployment", Workload: "web", Port: "http"}}},
		&tunnelpb.AgentHello{Pod: "web-0", Namespace: "default", Ports: []*tunnelpb.AgentPort{{Name: "http", Listen: 9900, App: 8080}}},
	}
	for _, s := range seeds {
		b, _ := proto.Marshal(s)
		f.Add(b, uint16(1), uint16(len(b)/2))
	}
	f.Add([]byte{dataTag, 0x81, 0x00, 'x'}, uint16(1), uint16(2))                   // a length in two bytes
	f.Add([]byte{dataTag, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'}, uint16(3), uint16(9)) // a length far past the end
	f.Add([]byte{dataTag, 0x01, 'x', dataTag, 0x01, 'y'}, uint16(0), uint16(3))     // Data twice: the last wins
	types := messageTypes(f)
	f.Fuzz(func(t *testing.T, wire []byte, cut1, cut2 uint16) {
		data := splitAt(wire, int(cut1), int(cut2))
		for _, mt := range types {
			got, want := mt.New().Interface(), mt.New().Interface()
			err, werr := Codec().Unmarshal(data, got), proto.Unmarshal(wire, want)
			if (err == nil) != (werr == nil) {
				t.Fatalf("%s: the codec says %v, protobuf %v", mt.Descriptor().FullName(), err, werr)
			}
			if err != nil {
				continue
			}
			if !proto.Equal(got, want) {
				t.Fatalf("%s: the codec decoded %v, protobuf %v", mt.Descriptor().FullName(), got, want)
			}
			out, err := Codec().Marshal(got)
			if err != nil {
				t.Fatalf("%s: %v does not encode: %v", mt.Descriptor().FullName(), got, err)
			}
			again := mt.New().Interface()
			if err := Codec().Unmarshal(out, again); err != nil || !proto.Equal(again, got) {
				t.Fatalf("%s: %v encoded and decoded is %v, %v", mt.Descriptor().FullName(), got, again, err)
			}
			out.Free()
			if fr, ok := got.(*tunnelpb.Frame); ok {
				releasePayload(fr.GetData())
			}
		}
	})
}

// messageTypes is every message of tp's protocol.
func messageTypes(f *testing.F) []protoreflect.MessageType {
	var types []protoreflect.MessageType
	for _, file := range []protoreflect.FileDescriptor{tunnelpb.File_tunnel_proto, tunnelpb.File_intercept_proto} {
		for i := 0; i < file.Messages().Len(); i++ {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(file.Messages().Get(i).FullName())
			if err != nil {
				f.Fatal(err)
			}
			types = append(types, mt)
		}
	}
	return types
}

// splitAt splits b into up to three buffers at the two cuts (taken modulo its length).
func splitAt(b []byte, cut1, cut2 int) mem.BufferSlice {
	cut1 %= len(b) + 1
	cut2 %= len(b) + 1
	if cut2 < cut1 {
		cut1, cut2 = cut2, cut1
	}
	return mem.BufferSlice{mem.SliceBuffer(b[:cut1]), mem.SliceBuffer(b[cut1:cut2]), mem.SliceBuffer(b[cut2:])}
}
