package access_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// small are limits a test reaches in a few requests.
func small() *access.Rates {
	return &access.Rates{
		Propose: access.OpRates{Principal: access.Rate{PerSecond: 1, Burst: 3}, Tenant: access.Rate{PerSecond: 2, Burst: 5}},
		Execute: access.OpRates{Principal: access.Rate{PerSecond: 1, Burst: 3}, Tenant: access.Rate{PerSecond: 2, Burst: 5}},
		Approve: access.OpRates{Principal: access.Rate{PerSecond: 1, Burst: 2}, Tenant: access.Rate{PerSecond: 1, Burst: 3}},
	}
}

func authorize(f *fixture, p *auth.Principal, op string, tn tenant.ID) error {
	return f.svc.Authorize(context.Background(), access.Request{Principal: p, Operation: op, Tenant: tn})
}

// TestProposeFloodIsRateLimitedPerPrincipal (issue 16: an agent proposed
// about 450 times a second with no quota): the key's fourth proposal in
// an instant is refused 429 rate_limited naming its limit, with a
// Retry-After; another key of the same tenant is still served; the refused
// attempt took no token (after Retry-After the flooder is served once).
func TestProposeFloodIsRateLimitedPerPrincipal(t *testing.T) {
	clk := newClock()
	f := newFixture(t, func(c *access.Config) { c.Rates, c.RateNow = small(), clk.Now })
	acme := tenant.MustParse("acme")
	_, flooder := f.bootstrap(t, "flooder", auth.RoleAgent, []string{"acme"}, []string{"*"})
	_, other := f.bootstrap(t, "other", auth.RoleAgent, []string{"acme"}, []string{"*"})
	for i := range 3 {
		if err := authorize(f, flooder, policy.OpPropose, acme); err != nil {
			t.Fatalf("proposal %d within the burst: %v", i, err)
		}
	}
	var wait time.Duration
	for i := range 5 {
		err := authorize(f, flooder, policy.OpPropose, acme)
		if code(err) != contract.CodeRateLimited || retryAfter(err) <= 0 || !strings.Contains(err.Error(), "this key's propose limit") {
			t.Fatalf("proposal %d beyond the burst: %v (retry after %v), want rate_limited naming the key's propose limit with a Retry-After", 3+i, err, retryAfter(err))
		}
		wait = retryAfter(err)
	}
	if wait > time.Second {
		t.Fatalf("Retry-After %v: one token comes back in a second", wait)
	}
	// Another key of the tenant has its own budget (the tenant's holds 5).
	if err := authorize(f, other, policy.OpPropose, acme); err != nil {
		t.Fatalf("another key of the flooded tenant: %v", err)
	}
	// Other operations have their own buckets.
	if err := authorize(f, flooder, policy.OpExecute, acme); err != nil {
		t.Fatalf("the flooder's execute: %v", err)
	}
	// Refusals took nothing: one token is back after Retry-After.
	clk.Add(wait)
	if err := authorize(f, flooder, policy.OpPropose, acme); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
	if err := authorize(f, flooder, policy.OpPropose, acme); code(err) != contract.CodeRateLimited {
		t.Fatalf("a second one after Retry-After: %v, want rate_limited", err)
	}
	// Reads are not limited.
	for range 10 {
		if err := authorize(f, flooder, policy.OpReadIntent, acme); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
}

// TestTenantFloodDoesNotLimitAnotherTenant: keys of acme together exhaust
// acme's tenant limit (a third acme key is refused by it, naming the
// tenant); beta's key is served.
func TestTenantFloodDoesNotLimitAnotherTenant(t *testing.T) {
	clk := newClock()
	f := newFixture(t, func(c *access.Config) { c.Rates, c.RateNow = small(), clk.Now })
	acme, beta := tenant.MustParse("acme"), tenant.MustParse("beta")
	var acmeKeys []*auth.Principal
	for _, n := range []string{"a1", "a2", "a3"} {
		_, p := f.bootstrap(t, n, auth.RoleAgent, []string{"acme"}, []string{"*"})
		acmeKeys = append(acmeKeys, p)
	}
	_, betaKey := f.bootstrap(t, "b1", auth.RoleAgent, []string{"beta"}, []string{"*"})
	admitted := 0
	for _, p := range acmeKeys[:2] {
		for range 3 {
			if authorize(f, p, policy.OpPropose, acme) == nil {
				admitted++
			}
		}
	}
	if admitted != 5 {
		t.Fatalf("acme admitted %d proposals from two keys, want its tenant burst 5", admitted)
	}
	err := authorize(f, acmeKeys[2], policy.OpPropose, acme)
	if code(err) != contract.CodeRateLimited || !strings.Contains(err.Error(), "tenant acme's propose limit") || retryAfter(err) <= 0 {
		t.Fatalf("a fresh acme key: %v, want rate_limited by acme's tenant limit", err)
	}
	for i := range 3 {
		if err := authorize(f, betaKey, policy.OpPropose, beta); err != nil {
			t.Fatalf("beta proposal %d during acme's flood: %v", i, err)
		}
	}
}

// TestApprovalVotesAreRateLimited, and an unauthorized vote costs no
// token: an agent (who may not approve) voting is forbidden, not limited,
// and the operator's budget is whole.
func TestApprovalVotesAreRateLimited(t *testing.T) {
	clk := newClock()
	f := newFixture(t, func(c *access.Config) { c.Rates, c.RateNow = small(), clk.Now })
	acme := tenant.MustParse("acme")
	_, op := f.bootstrap(t, "op", auth.RoleOperator, []string{"acme"}, []string{"*"})
	_, agent := f.bootstrap(t, "agent", auth.RoleAgent, []string{"acme"}, []string{"*"})
	for range 5 {
		if err := authorize(f, agent, policy.OpApprove, acme); code(err) != contract.CodeForbidden {
			t.Fatalf("an agent's vote: %v, want forbidden", err)
		}
	}
	for i := range 2 {
		if err := authorize(f, op, policy.OpApprove, acme); err != nil {
			t.Fatalf("vote %d: %v", i, err)
		}
	}
	if err := authorize(f, op, policy.OpApprove, acme); code(err) != contract.CodeRateLimited || !strings.Contains(err.Error(), "approve") {
		t.Fatalf("third vote in an instant: %v, want rate_limited naming approve", err)
	}
}

// TestRateLimitAuditIsAggregated: 50 refusals are one rate.limited record
// in the tenant's chain, counting them, not 50 records.
func TestRateLimitAuditIsAggregated(t *testing.T) {
	clk := newClock()
	f := newFixture(t, func(c *access.Config) { c.Rates, c.RateNow, c.Now = small(), clk.Now, clk.Now })
	acme := tenant.MustParse("acme")
	_, p := f.bootstrap(t, "flooder", auth.RoleAgent, []string{"acme"}, []string{"*"})
	refused := 0
	for range 53 {
		if code(authorize(f, p, policy.OpPropose, acme)) == contract.CodeRateLimited {
			refused++
		}
	}
	if refused != 50 {
		t.Fatalf("refused %d, want 50", refused)
	}
	if got := f.kinds(t, acme); len(got) != 0 {
		t.Fatalf("records before the interval ends: %v, want none", got)
	}
	if err := f.svc.FlushAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
	var reports []access.RateReport
	if err := f.log.Scan(context.Background(), acme, 0, 0, func(_ []byte, r contract.AuditRecord) error {
		if r.Kind != access.KindRateLimited {
			t.Errorf("record %s, want only %s", r.Kind, access.KindRateLimited)
		}
		var rep access.RateReport
		if err := json.Unmarshal(r.Payload, &rep); err != nil {
			return err
		}
		reports = append(reports, rep)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || reports[0].Refused != 50 || len(reports[0].Entries) != 1 ||
		!slices.Equal([]string{reports[0].Entries[0].Principal, reports[0].Entries[0].Operation, reports[0].Entries[0].Scope}, []string{p.ID, policy.OpPropose, "principal"}) {
		t.Fatalf("reports %+v, want one counting 50 refusals of %s's proposals by its own limit", reports, p.ID)
	}
}
