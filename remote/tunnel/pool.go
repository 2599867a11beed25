package tunnel

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// BufferPool is the gRPC buffer pool both ends of the tunnel use (grpc/experimental's
// WithBufferPool and BufferPool options). gRPC's default pool has no tier between 32 KiB and
// 1 MiB and zeroes every buffer it hands out, so each 64 KiB Data frame cost clearing a
// megabyte: measured, that was the tunnel's largest CPU cost after syscalls. This pool has
// tiers that fit Data frames and does not zero: gRPC overwrites every byte of a received
// message before use, and all flows of one connection belong to one user.
func BufferPool() mem.BufferPool { return pool }

var pool = newTiered(256, 4<<10, 16<<10, 32<<10, MaxChunk+1<<10, 256<<10, 1<<20)

type tiered struct {
	sizes []int
	pools []sync.Pool
}

func newTiered(sizes ...int) *tiered {
	t := &tiered{sizes: sizes, pools: make([]sync.Pool, len(sizes))}
	for i, size := range sizes {
		t.pools[i].New = func() any { b := make([]byte, size); return &b }
	}
	return t
}

func (t *tiered) Get(length int) *[]byte {
	for i, size := range t.sizes {
		if length <= size {
			b := t.pools[i].Get().(*[]byte)
			*b = (*b)[:length]
			return b
		}
	}
	b := make([]byte, length)
	return &b
}

func (t *tiered) Put(b *[]byte) {
	c := cap(*b)
	for i, size := range t.sizes {
		if c == size {
			*b = (*b)[:c]
			t.pools[i].Put(b)
			return
		}
	}
}
