package remote

import (
	"io"
	"testing"
)

// sizeRecorder fills every Read completely, up to total bytes, and records the sizes asked.
type sizeRecorder struct {
	left  int
	asked []int
	chunk int // at most this much per Read; 0: all that is asked
}

func (r *sizeRecorder) Read(p []byte) (int, error) {
	r.asked = append(r.asked, len(p))
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	if r.chunk > 0 {
		n = min(n, r.chunk)
	}
	r.left -= n
	return n, nil
}

func TestCopyAdaptiveGrowsForBulkOnly(t *testing.T) {
	bulk := &sizeRecorder{left: 10 << 20}
	n, err := copyAdaptive(io.Discard, bulk)
	if err != nil || n != 10<<20 {
		t.Fatalf("copied %d: %v", n, err)
	}
	if bulk.asked[0] != smallBuf || bulk.asked[fullReads] != largeBuf {
		t.Errorf("bulk flow read sizes %v..., want %d then %d after %d full reads", bulk.asked[:fullReads+1], smallBuf, largeBuf, fullReads)
	}
	chatty := &sizeRecorder{left: 1 << 20, chunk: 100}
	if n, err := copyAdaptive(io.Discard, chatty); err != nil || n != 1<<20 {
		t.Fatalf("copied %d: %v", n, err)
	}
	for _, a := range chatty.asked {
		if a != smallBuf {
			t.Fatalf("a flow of small reads got a %d-byte buffer", a)
		}
	}
}
