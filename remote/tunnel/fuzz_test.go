package tunnel

import (
	"io"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

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
