package remote

import (
	"context"
	"time"
)

// Every calls f with the time every period until ctx ends or f returns false. Housekeeping
// loops on both sides (lease expiry, renewals, range refreshes) share it, so each says only
// what it does, not how it waits.
func Every(ctx context.Context, period time.Duration, f func(now time.Time) bool) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !f(now) {
				return
			}
		}
	}
}
