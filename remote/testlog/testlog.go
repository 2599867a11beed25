// Package testlog is a log that a test reads while the code under test writes it from its
// own goroutines: servers, agents and front ends log what they refused, and their tests
// wait for those lines.
package testlog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Buffer collects log output; it is safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count is how many times s appears in the log.
func (l *Buffer) Count(s string) int { return strings.Count(l.String(), s) }

// Logger logs into l as text, debug messages included.
func (l *Buffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Expect waits up to timeout for s to appear n times, and fails the test with the log
// when it does not.
func (l *Buffer) Expect(t testing.TB, s string, n int, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); l.Count(s) < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			log := l.String()
			t.Fatalf("%d log lines say %q, want %d; the log:\n%s", strings.Count(log, s), s, n, log)
		}
	}
}
