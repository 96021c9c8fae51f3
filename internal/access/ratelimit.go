package access

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/metrics"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Rate limits of the operations that write: propose, execute and approval
// votes.
//
// Each is a token bucket per principal (credential ID, across its tenants)
// and one per tenant (every principal of the tenant together). Authorize
// checks them last, once authentication and authorization succeeded, so
// an unauthenticated or unauthorized flood cannot drain anybody's budget.
// A request takes one token from both its buckets, or, if either is empty,
// none from either: a refused request costs nothing, so a client that
// retries after Retry-After is served. A request admitted here and refused
// later (an invalid body, a blocked decision) has used its token.
//
// The refusal is CodeRateLimited with a RetryAfter (when the empty bucket
// has a token again) and a message naming the limit (principal or tenant)
// and the operation. Refusals are counted in
// exoarmur_rate_limited_total{operation,scope} and audited aggregated: one
// rate.limited record per tenant per audit interval (a RateReport in the
// tenant's chain), never one per refusal.
//
// The buckets are in this process: the limit is per node, and N nodes
// behind a balancer admit up to N times it. The tables are LRUs of at most
// MaxTracked buckets each (an evicted bucket starts full again).

// Rate is one token bucket: PerSecond tokens a second, up to Burst. A
// PerSecond of 0 (or less) is no limit.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Off reports whether r limits nothing.
func (r Rate) Off() bool { return r.PerSecond <= 0 }

func (r Rate) String() string {
	if r.Off() {
		return "off"
	}
	return fmt.Sprintf("%g/s burst %d", r.PerSecond, r.Burst)
}

// OpRates are an operation's two limits.
type OpRates struct {
	Principal Rate
	Tenant    Rate
}

// Rates are the limits of the three limited operations.
type Rates struct {
	Propose, Execute, Approve OpRates
}

// DefaultRates: per principal 50 a second (burst 100) to propose, to
// execute and to vote; per tenant four times that. (Votes have the same
// default: an operator's script approving a batch, as the end-to-end tests
// do, is a legitimate burst; each vote is one per owner and intent anyway.)
// An agent at 50 a second is far beyond a human-paced workflow (the issue's
// agent proposed 450 a second), and a tenant at 200 is a small share of
// what one node sustains (about 4,900 proposals a second,
// docs/PERFORMANCE.md), so one tenant's agents cannot take the node.
func DefaultRates() Rates {
	return Rates{
		Propose: OpRates{Principal: Rate{50, 100}, Tenant: Rate{200, 400}},
		Execute: OpRates{Principal: Rate{50, 100}, Tenant: Rate{200, 400}},
		Approve: OpRates{Principal: Rate{50, 100}, Tenant: Rate{200, 400}},
	}
}

// Of returns the limits of operation op (policy.Op*) and whether op is a
// limited operation.
func (r Rates) Of(op string) (OpRates, bool) {
	switch op {
	case policy.OpPropose:
		return r.Propose, true
	case policy.OpExecute:
		return r.Execute, true
	case policy.OpApprove:
		return r.Approve, true
	}
	return OpRates{}, false
}

// bucket is a token bucket's state.
type bucket struct {
	tokens float64
	at     time.Time
}

// level refills b to now under r (a new bucket starts full).
func (b *bucket) level(r Rate, now time.Time) {
	switch {
	case b.at.IsZero():
		b.tokens, b.at = float64(r.Burst), now
	case now.After(b.at):
		b.tokens = math.Min(float64(r.Burst), b.tokens+r.PerSecond*now.Sub(b.at).Seconds())
		b.at = now
	}
}

// wait is how long until b holds a whole token (0: it does).
func (b *bucket) wait(r Rate) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - b.tokens) / r.PerSecond * float64(time.Second)))
}

// rateLimiter holds the buckets; the caller holds Service.mu.
type rateLimiter struct {
	rates      Rates
	principals *lru[bucket] // key: operation \x00 principal ID
	tenants    *lru[bucket] // key: operation \x00 tenant
}

func newRateLimiter(r Rates, maxTracked int) *rateLimiter {
	return &rateLimiter{rates: r, principals: newLRU[bucket](maxTracked), tenants: newLRU[bucket](maxTracked)}
}

// admit takes a token for op from principal's and t's buckets, or from
// neither; it returns the scope that refused ("" when admitted) and how
// long until it would admit.
func (l *rateLimiter) admit(op, principal string, t tenant.ID, now time.Time) (string, time.Duration) {
	rs, ok := l.rates.Of(op)
	if !ok {
		return "", 0
	}
	type side struct {
		scope string
		rate  Rate
		table *lru[bucket]
		key   string
		b     bucket
	}
	sides := []*side{{scope: "principal", rate: rs.Principal, table: l.principals, key: op + "\x00" + principal}}
	if !t.IsZero() {
		sides = append(sides, &side{scope: "tenant", rate: rs.Tenant, table: l.tenants, key: op + "\x00" + t.String()})
	}
	refused, wait := "", time.Duration(0)
	for _, s := range sides {
		if s.rate.Off() {
			continue
		}
		s.b, _ = s.table.get(s.key)
		s.b.level(s.rate, now)
		if w := s.b.wait(s.rate); w > 0 && w > wait {
			refused, wait = s.scope, w
		}
	}
	for _, s := range sides {
		if s.rate.Off() {
			continue
		}
		if refused == "" {
			s.b.tokens--
		}
		s.table.put(s.key, s.b)
	}
	return refused, wait
}

// KindRateLimited: the requests the rate limits refused in one audit
// interval in a tenant, aggregated (a RateReport, in the tenant's chain).
const KindRateLimited = "rate.limited"

// RateReport is the payload of a rate.limited record.
type RateReport struct {
	From    time.Time   `json:"from"`
	To      time.Time   `json:"to"`
	Refused int         `json:"refused"` // every refusal (overflow included)
	Entries []RateEntry `json:"entries"`
	// OverflowRefused are the refusals of (principal, operation, scope)
	// triples beyond MaxAuditEntries, counted but not itemized.
	OverflowRefused int `json:"overflow_refused,omitempty"`
}

// RateEntry is one (principal, operation, scope) of a RateReport.
type RateEntry struct {
	Principal string    `json:"principal"`
	Operation string    `json:"operation"`
	Scope     string    `json:"scope"` // principal or tenant: the limit that refused
	Refused   int       `json:"refused"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
}

type rateKey struct{ principal, op, scope string }

type tenantRateLog struct {
	report  *RateReport
	entries map[rateKey]*RateEntry
}

// rateLog accumulates one interval's refusals per tenant; the caller holds
// Service.mu.
type rateLog struct {
	max     int
	from    time.Time
	tenants map[tenant.ID]*tenantRateLog
}

func (f *rateLog) note(now time.Time, t tenant.ID, principal, op, scope string) {
	if f.tenants == nil {
		f.tenants, f.from = map[tenant.ID]*tenantRateLog{}, now
	}
	tl := f.tenants[t]
	if tl == nil {
		tl = &tenantRateLog{report: &RateReport{From: now}, entries: map[rateKey]*RateEntry{}}
		f.tenants[t] = tl
	}
	tl.report.Refused++
	k := rateKey{principal, op, scope}
	e := tl.entries[k]
	if e == nil {
		if len(tl.entries) >= f.max {
			tl.report.OverflowRefused++
			return
		}
		e = &RateEntry{Principal: principal, Operation: op, Scope: scope, First: now}
		tl.entries[k] = e
	}
	e.Refused++
	e.Last = now
}

func (f *rateLog) due(now time.Time, interval time.Duration) bool {
	return f.tenants != nil && now.Sub(f.from) >= interval
}

// take returns the pending reports by tenant and starts a new interval.
func (f *rateLog) take(now time.Time) map[tenant.ID]*RateReport {
	if f.tenants == nil {
		return nil
	}
	out := make(map[tenant.ID]*RateReport, len(f.tenants))
	for t, tl := range f.tenants {
		r := tl.report
		r.To = now
		for _, e := range tl.entries {
			r.Entries = append(r.Entries, *e)
		}
		slices.SortFunc(r.Entries, func(a, b RateEntry) int {
			return cmp.Or(cmp.Compare(a.Principal, b.Principal), cmp.Compare(a.Operation, b.Operation), cmp.Compare(a.Scope, b.Scope))
		})
		out[t] = r
	}
	f.tenants = nil
	return out
}

// writeRateReports appends each tenant's rate.limited record; a record
// that cannot be written is logged (the refusals stood either way).
func (s *Service) writeRateReports(ctx context.Context, rs map[tenant.ID]*RateReport) {
	if s.cfg.Audit == nil {
		return
	}
	ts := make([]tenant.ID, 0, len(rs))
	for t := range rs {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b tenant.ID) int { return cmp.Compare(a.String(), b.String()) })
	for _, t := range ts {
		r := rs[t]
		if _, err := s.cfg.Audit.Append(context.WithoutCancel(ctx), t, audit.Entry{
			Kind: KindRateLimited, Actor: "system", Time: r.To, Payload: r,
		}); err != nil {
			s.cfg.Logger.ErrorContext(ctx, "audit rate-limited requests", "kind", KindRateLimited, "tenant", t.String(), "refused", r.Refused, "err", err)
		}
	}
}

// rateLimit applies the limits of req's operation; nil when admitted.
func (s *Service) rateLimit(ctx context.Context, req Request) error {
	if s.rates == nil {
		return nil
	}
	now := s.cfg.RateNow()
	s.mu.Lock()
	scope, wait := s.rates.admit(req.Operation, req.Principal.ID, req.Tenant, now)
	if scope == "" {
		s.mu.Unlock()
		return nil
	}
	var due map[tenant.ID]*RateReport
	if s.rateLog.due(now, s.cfg.AuditInterval) {
		due = s.rateLog.take(now)
	}
	t := req.Tenant
	if t.IsZero() {
		t = tenant.System
	}
	s.rateLog.note(now, t, req.Principal.ID, req.Operation, scope)
	s.mu.Unlock()
	s.writeRateReports(ctx, due)
	metrics.RateLimited.WithLabelValues(req.Operation, scope).Inc()
	rs, _ := s.rates.rates.Of(req.Operation)
	r := rs.Principal
	what := "this key's"
	if scope == "tenant" {
		r, what = rs.Tenant, fmt.Sprintf("tenant %s's", req.Tenant)
	}
	e := contract.Errorf(contract.CodeRateLimited, "rate limit: %s %s limit (%s) is used up; try again after Retry-After", what, req.Operation, r)
	e.RetryAfter = wait
	return e
}
