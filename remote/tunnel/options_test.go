package tunnel

import "testing"

// The settings of the two ends must agree, or the manager drops its clients or refuses
// their frames.
func TestOptionsAgreeAcrossTheTunnel(t *testing.T) {
	// A client that pings more often than the manager enforces is told too_many_pings and
	// dropped. (Agents reach the manager through net/http, which enforces nothing.)
	if laptopPing < minClientPing {
		t.Errorf("the laptop pings every %v; the manager drops clients that ping more often than every %v", laptopPing, minClientPing)
	}
	// The largest message a peer sends is a Data frame of MaxChunk and its header.
	if MaxMessage < payloadCap+16 {
		t.Errorf("MaxMessage %d refuses a full Data frame (%d bytes and a header)", MaxMessage, payloadCap)
	}
	// A stream window larger than the connection's would never be used in full.
	if laptopStreamWindow > laptopConnWindow || managerStreamWindow > managerConnWindow {
		t.Errorf("a stream window exceeds its connection's: laptop %d/%d, manager %d/%d",
			laptopStreamWindow, laptopConnWindow, managerStreamWindow, managerConnWindow)
	}
}
