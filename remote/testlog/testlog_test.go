package testlog

import (
	"testing"
	"time"
)

func TestBufferCountsWhatLoggersWrite(t *testing.T) {
	var l Buffer
	go func() {
		for range 3 {
			l.Logger().Debug("agent refused", "why", "test")
		}
	}()
	l.Expect(t, "agent refused", 3, 5*time.Second)
	if n := l.Count("agent refused"); n != 3 {
		t.Fatalf("Count = %d, want 3; log:\n%s", n, l.String())
	}
	if n := l.Count("not said"); n != 0 {
		t.Fatalf("Count of an absent line = %d", n)
	}
}
