package access

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/auth"
)

// registry is an Authenticator whose every key id is registered with a
// secret nobody presents: each failure names a key id.
type registry struct{ unknown bool }

func (r registry) Authenticate(context.Context, string) (*auth.Principal, error) {
	if r.unknown {
		return nil, auth.ErrUnknownKey
	}
	return nil, auth.ErrUnauthenticated
}

// TestLimiterStateIsBounded: rotating sources and random key ids cannot
// grow the limiter's tables, nor one interval's audit entries, beyond their
// caps.
func TestLimiterStateIsBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		unknown bool
	}{{"registered ids", false}, {"unknown ids", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{Keys: registry{tc.unknown}, Now: func() time.Time { return now }, MaxTracked: 100, MaxAuditEntries: 50, GlobalFailBurst: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5000 {
				key := fmt.Sprintf("exo_%016x_%043d", i, i)
				_, _ = s.Authenticate(context.Background(), Credentials{APIKey: key, Source: fmt.Sprintf("127.%d.%d.%d", i>>16&255, i>>8&255, i&255)}, Meta{})
			}
			s.mu.Lock()
			keys, srcs, entries := s.limits.keys.len(), s.limits.srcs.len(), len(s.failLog.entries)
			overflow := s.failLog.report.OverflowAttempts
			s.mu.Unlock()
			if keys > 100 || srcs > 100 || entries > 50 || overflow != 5000-50 {
				t.Fatalf("%d key entries, %d source entries, %d audit entries (overflow %d); want <= 100, <= 100, <= 50 (4950)", keys, srcs, entries, overflow)
			}
		})
	}
}
