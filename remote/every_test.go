package remote

import (
	"context"
	"testing"
	"time"
)

func TestEveryStopsWhenToldOrWhenCtxEnds(t *testing.T) {
	n := 0
	done := make(chan struct{})
	go func() {
		Every(context.Background(), time.Millisecond, func(time.Time) bool { n++; return n < 3 })
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every went on after f returned false")
	}
	if n != 3 {
		t.Fatalf("f ran %d times, want 3", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{}, 1)
	stopped := make(chan struct{})
	go func() {
		Every(ctx, time.Millisecond, func(time.Time) bool {
			select {
			case ran <- struct{}{}:
			default:
			}
			return true
		})
		close(stopped)
	}()
	<-ran
	cancel()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Every went on after its context ended")
	}
}
