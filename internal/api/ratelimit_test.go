package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/audit"
)

// TestProposeFloodGets429WithRetryAfter (issue 16: an agent proposed about
// 450 times a second with no quota): over HTTP, the key's proposals beyond
// its burst are 429 rate_limited with a Retry-After in whole seconds and a
// message naming the limit; another key of the same tenant and a key of
// another tenant are served.
func TestProposeFloodGets429WithRetryAfter(t *testing.T) {
	fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := newFixture(t, func(c *access.Config) {
		c.Rates = &access.Rates{Propose: access.OpRates{Principal: access.Rate{PerSecond: 1, Burst: 3}, Tenant: access.Rate{PerSecond: 10, Burst: 10}}}
		c.RateNow = func() time.Time { return fixed }
	})
	body := func(k string) []byte {
		return mustJSON(map[string]any{"action": "fs.read", "target": "a.txt", "idempotency_key": k})
	}
	for i := range 3 {
		if r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, body(fmt.Sprintf("k%d", i))); r.code != 201 {
			t.Fatalf("proposal %d: %d %s", i, r.code, r.raw)
		}
	}
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, body("k3"))
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	if r.code != 429 || errCode(r) != "rate_limited" || err != nil || secs < 1 || !strings.Contains(string(r.raw), "propose limit") {
		t.Fatalf("the fourth proposal: %d %s (Retry-After %q), want 429 rate_limited naming the propose limit with Retry-After >= 1", r.code, r.raw, r.header.Get("Retry-After"))
	}
	if r := f.do(t, "GET", "/v1/tenants/acme/intents/"+"in_0", agentKey, nil); r.code == 429 {
		t.Fatalf("a read by the limited key: %d, reads are not rate limited", r.code)
	}
	if r := f.do(t, "POST", "/v1/tenants/acme/intents", opKey, body("op1")); r.code != 201 {
		t.Fatalf("another key of acme: %d %s", r.code, r.raw)
	}
	if r := f.do(t, "POST", "/v1/tenants/beta/intents", otherKey, body("b1")); r.code != 201 {
		t.Fatalf("beta's key: %d %s", r.code, r.raw)
	}
}

// subjectCounter counts the reads in flight per subject (one per tenant's
// chain) and the most at once; each read lingers so that unbounded reads
// would overlap.
type subjectCounter struct {
	audit.Stream
	mu      sync.Mutex
	now     map[string]int
	highest map[string]int
}

func (s *subjectCounter) Read(ctx context.Context, subject string, start uint64, fn func(uint64, []byte) error) error {
	s.mu.Lock()
	s.now[subject]++
	s.highest[subject] = max(s.highest[subject], s.now[subject])
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.now[subject]--; s.mu.Unlock() }()
	time.Sleep(30 * time.Millisecond)
	return s.Stream.Read(ctx, subject, start, fn)
}

// TestTenantReadsAreBounded (issue 16: one tenant's heavy reads slowed
// another's decisions): with TenantReads 1, six audit reads of acme at
// once (lists and exports) read its chain one at a time, all complete, and
// beta's read is served meanwhile.
func TestTenantReadsAreBounded(t *testing.T) {
	f := newFixture(t)
	sc := &subjectCounter{Stream: f.st.Audit, now: map[string]int{}, highest: map[string]int{}}
	cfg := f.cfg
	cfg.Audit, cfg.Exports, cfg.TenantReads = audit.New(sc), 8, 1
	srv := httptest.NewServer(api.New(cfg))
	defer srv.Close()
	acmeC, err := client.New(srv.URL, client.WithAPIKey(opKey)) // the whole audit: an operator
	if err != nil {
		t.Fatal(err)
	}
	betaC := acmeC.With(client.WithAPIKey(betaOpKey))
	var wg sync.WaitGroup
	errs := make(chan error, 7)
	for i := range 6 {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				_, err = acmeC.AuditExport(t.Context(), "acme", io.Discard)
			} else {
				_, err = acmeC.AuditPage(t.Context(), "acme", 0, 100)
			}
			errs <- err
		})
	}
	wg.Go(func() { _, err := betaC.AuditPage(t.Context(), "beta", 0, 100); errs <- err })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for subj, n := range sc.highest {
		if n > 1 {
			t.Fatalf("%d reads of %s at once, want at most TenantReads (1)", n, subj)
		}
	}
}
