package api_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
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
