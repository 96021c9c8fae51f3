package access_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// clock is an injected clock the tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func (f *fixture) try(key, source string) error {
	_, err := f.svc.Authenticate(context.Background(), access.Credentials{APIKey: key, Source: source}, access.Meta{Route: "GET /v1/tenants/{tenant}/audit"})
	return err
}

// wrongSecret is key with another secret of the right shape.
func wrongSecret(key string, i int) string {
	s := fmt.Sprintf("%043d", i)
	return key[:len(key)-43] + s
}

// randomID is a well-formed key naming an id that is not registered.
func randomID(i int) string {
	return fmt.Sprintf("exo_%016x_%043d", 0xdead0000+i, i)
}

func retryAfter(err error) time.Duration {
	var e *contract.Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// TestFloodedSourceStillAdmitsAValidKey (issue 16): twenty bad keys from
// one loopback address locked a valid admin key out from that address.
func TestFloodedSourceStillAdmitsAValidKey(t *testing.T) {
	clk := newClock()
	f := newFixture(t, func(c *access.Config) { c.Now = clk.Now })
	adminKey, admin := f.bootstrap(t, "root", auth.RoleAdmin, []string{auth.SystemGrant}, []string{"*"})
	const src = "127.0.0.1"
	bad := []string{"", "exo_wrong", "not-a-key"}
	for i := range 25 {
		key := bad[i%len(bad)]
		if i%2 == 1 {
			key = randomID(i)
		}
		want := contract.CodeUnauthenticated
		if i >= 20 {
			want = contract.CodeRateLimited
		}
		if err := f.try(key, src); code(err) != want {
			t.Fatalf("bad key %d (%q) from %s: %v, want %s", i, key, src, err, want)
		}
	}
	if err := f.try(randomID(99), src); code(err) != contract.CodeRateLimited || retryAfter(err) <= 0 {
		t.Fatalf("another unknown id from the flooded source: %v (retry after %v), want rate_limited with a Retry-After", err, retryAfter(err))
	}
	// The valid admin key from the same address authenticates.
	_, err := f.svc.Authenticate(context.Background(), access.Credentials{APIKey: adminKey, Source: src}, access.Meta{})
	if err != nil {
		t.Fatalf("the valid admin key %s from the flooded source: %v", admin.ID, err)
	}
}

// TestGuessingOneKeyFromManySources (issue 16): bad secrets for one key id
// rotated over 40 loopback addresses were never limited. They are limited
// per key id, whatever the source; another key id is not affected.
func TestGuessingOneKeyFromManySources(t *testing.T) {
	clk := newClock()
	f := newFixture(t, func(c *access.Config) { c.Now = clk.Now })
	victimKey, _ := f.bootstrap(t, "victim", auth.RoleAdmin, []string{"acme"}, []string{"*"})
	otherKey, _ := f.bootstrap(t, "other", auth.RoleAdmin, []string{"acme"}, []string{"*"})
	for i := range 40 {
		src := fmt.Sprintf("127.0.0.%d", i+1)
		err := f.try(wrongSecret(victimKey, i), src)
		want := contract.CodeUnauthenticated
		if i >= 5 { // the default KeyFailLimit
			want = contract.CodeRateLimited
		}
		if code(err) != want {
			t.Fatalf("guess %d from %s: %v, want %s", i, src, err, want)
		}
		if want == contract.CodeRateLimited && retryAfter(err) <= 0 {
			t.Fatalf("guess %d: no Retry-After", i)
		}
		// The valid key of another id works from every one of them.
		if err := f.try(otherKey, src); err != nil {
			t.Fatalf("the other key from %s after guess %d: %v", src, i, err)
		}
	}
	// The victim's own key waits out its backoff (its id is under attack),
	// then authenticates, which resets the backoff.
	if err := f.try(victimKey, "127.0.0.200"); code(err) != contract.CodeRateLimited {
		t.Fatalf("the attacked key during its backoff: %v, want rate_limited", err)
	}
	clk.Add(retryAfter(f.try(victimKey, "127.0.0.200")))
	if err := f.try(victimKey, "127.0.0.200"); err != nil {
		t.Fatalf("the attacked key after its backoff: %v", err)
	}
	if err := f.try(wrongSecret(victimKey, 1), "127.0.0.201"); code(err) != contract.CodeUnauthenticated {
		t.Fatalf("a guess after the reset: %v, want unauthenticated", err)
	}
	// The backoff doubles with each failure after the limit (1 s, 2 s, ...).
	clk.Add(time.Hour + time.Minute) // an hour without failures forgets it
	var waits []time.Duration
	for i := range 12 {
		if err := f.try(wrongSecret(victimKey, i), "127.0.0.9"); code(err) != contract.CodeUnauthenticated {
			t.Fatalf("guess %d after the wait: %v, want unauthenticated", i, err)
		}
		if i < 4 {
			continue
		}
		w := retryAfter(f.try(wrongSecret(victimKey, 99), "127.0.0.9"))
		waits = append(waits, w)
		clk.Add(w)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 64 * time.Second, 128 * time.Second}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Fatalf("backoffs %v, want %v", waits, want)
	}
}

// TestRotatingSourcesWithRandomIDsHitTheBackstop: unknown ids, one from
// each of many addresses, pass every per-source limit; the global backstop
// limits them, and never a valid key.
func TestRotatingSourcesWithRandomIDsHitTheBackstop(t *testing.T) {
	clk := newClock()
	f := newFixture(t, func(c *access.Config) { c.Now = clk.Now })
	validKey, _ := f.bootstrap(t, "bot", auth.RoleAgent, []string{"acme"}, []string{"*"})
	const burst = 200 // the default GlobalFailBurst
	limited := 0
	for i := range burst + 50 {
		src := fmt.Sprintf("127.0.%d.%d", i/250, i%250+1)
		err := f.try(randomID(i), src)
		switch {
		case i < burst && code(err) != contract.CodeUnauthenticated:
			t.Fatalf("unknown id %d from %s: %v, want unauthenticated", i, src, err)
		case i >= burst && code(err) != contract.CodeRateLimited:
			t.Fatalf("unknown id %d from %s: %v, want rate_limited (backstop)", i, src, err)
		case code(err) == contract.CodeRateLimited:
			limited++
		}
		if i%25 == 0 {
			if err := f.try(validKey, src); err != nil {
				t.Fatalf("a valid key from %s with the backstop at %d: %v", src, i, err)
			}
		}
	}
	// Malformed keys from a fresh address too, and the bucket refills.
	if err := f.try("exo_wrong", "127.0.9.9"); code(err) != contract.CodeRateLimited {
		t.Fatalf("malformed key with the backstop empty: %v", err)
	}
	clk.Add(time.Minute)
	if err := f.try(randomID(1000), "127.0.9.9"); code(err) != contract.CodeUnauthenticated {
		t.Fatalf("after a minute: %v, want unauthenticated", err)
	}
	t.Logf("%d attempts refused by the backstop", limited)
}

// TestFailureAuditIsAggregated (issue 16): every failure added a permanent
// record to the system chain. Now an interval's failures are one
// auth.failures record naming each source and key id.
func TestFailureAuditIsAggregated(t *testing.T) {
	clk := newClock()
	f := newFixture(t, func(c *access.Config) { c.Now = clk.Now; c.MaxAuditEntries = 12 })
	key, p := f.bootstrap(t, "bot", auth.RoleAgent, []string{"acme"}, []string{"*"})
	pairs := map[string]bool{}
	for i := range 60 {
		src := fmt.Sprintf("127.0.0.%d", i%4+1)
		k := []string{wrongSecret(key, i), randomID(i % 2), "exo_wrong"}[i%3]
		_ = f.try(k, src)
		pairs[src+" "+auth.KeyID(k)] = true
		clk.Add(time.Second / 2)
	}
	// 30 s later: one more interval's worth, with pairs beyond the cap.
	clk.Add(time.Minute)
	for i := range 20 {
		_ = f.try(randomID(100+i), fmt.Sprintf("127.0.1.%d", i+1))
	}
	if err := f.svc.FlushAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.FlushAudit(context.Background()); err != nil { // nothing pending: no record
		t.Fatal(err)
	}
	var reports []access.FailureReport
	perKind := map[string]int{}
	if err := f.log.Scan(context.Background(), tenant.System, 0, 0, func(_ []byte, r contract.AuditRecord) error {
		perKind[r.Kind]++
		if r.Kind == access.KindAuthFailures {
			var rep access.FailureReport
			if err := json.Unmarshal(r.Payload, &rep); err != nil {
				return err
			}
			reports = append(reports, rep)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 || perKind[access.KindAuthFailed] != 0 {
		t.Fatalf("system chain %v: want 2 auth.failures records (one per interval) and no auth.failed", perKind)
	}
	first := reports[0]
	got := map[string]bool{}
	total := 0
	for _, e := range first.Entries {
		got[e.Source+" "+e.KeyID] = true
		total += e.Failures + e.Limited
		if e.First.IsZero() || e.Last.Before(e.First) || len(e.Reasons) == 0 {
			t.Errorf("entry %+v: want first <= last and reasons", e)
		}
		if strings.Contains(e.KeyID, key[len(key)-43:]) {
			t.Fatal("a secret in the audit")
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(pairs) || total != 60 || first.Failures+first.Limited != 60 {
		t.Fatalf("first report names %v (%d attempts), want %v (60)", got, total, pairs)
	}
	if !got["127.0.0.1 "+p.ID] {
		t.Fatalf("the guessed key id %s is not named", p.ID)
	}
	second := reports[1]
	if len(second.Entries) != 12 || second.OverflowAttempts != 8 || second.Failures+second.Limited != 20 {
		t.Fatalf("second report: %d entries, overflow %d, %d attempts; want 12, 8, 20", len(second.Entries), second.OverflowAttempts, second.Failures+second.Limited)
	}
}
