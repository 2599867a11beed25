package ratelimit

import (
	"testing"
	"time"
)

func TestLimiterLetsNPerPeriodAndCountsTheRest(t *testing.T) {
	l := New(2, 10*time.Second)
	t0 := time.Unix(1000, 0)
	for i, want := range []bool{true, true, false, false, false} {
		if ok, skipped := l.Allow(t0.Add(time.Duration(i) * time.Second)); ok != want || skipped != 0 {
			t.Fatalf("event %d: %v, %d skipped; want %v, 0", i, ok, skipped, want)
		}
	}
	if ok, skipped := l.Allow(t0.Add(10 * time.Second)); !ok || skipped != 3 {
		t.Fatalf("next period: %v, %d skipped; want true, 3", ok, skipped)
	}
	if ok, skipped := l.Allow(t0.Add(11 * time.Second)); !ok || skipped != 0 {
		t.Fatalf("second of the next period: %v, %d skipped; want true, 0", ok, skipped)
	}
}

// With n 1 the period runs from the last event let through: at most one line every period.
func TestLimiterOfOneSpacesEvents(t *testing.T) {
	l := New(1, 10*time.Second)
	t0 := time.Unix(1000, 0)
	if ok, _ := l.Allow(t0); !ok {
		t.Fatal("the first event was held back")
	}
	if ok, _ := l.Allow(t0.Add(9 * time.Second)); ok {
		t.Fatal("a second event within the period went through")
	}
	if ok, skipped := l.Allow(t0.Add(10 * time.Second)); !ok || skipped != 1 {
		t.Fatalf("after the period: %v, %d skipped; want true, 1", ok, skipped)
	}
}
