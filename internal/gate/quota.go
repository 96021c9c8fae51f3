package gate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/metrics"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// Tenant quotas: what one tenant may hold in the live store.
//
//   - pending intents: intents stored whose execution has not started
//     (no idempotency claim: proposed, or blocked and not yet run);
//   - pending approvals: approval requests still awaiting their votes
//     (Config.PendingApprovals counts them; without it this quota is off);
//   - stored bytes: the tenant's intent records as stored (the bucket
//     values; execution outputs, in the claims, are not counted: each is
//     bounded by RecordBudget and their number by the execute rate).
//
// Propose checks them for a new intent before anything is written (a
// repeat of a stored proposal is answered as before): one over a quota is
// refused with CodeQuotaExceeded (HTTP 429, no Retry-After: waiting alone
// does not help, executing, deciding or letting intents expire does),
// nothing audited or stored, and counted in exoarmur_quota_refused_total.
//
// The counts are per node and approximate. Each node counts a tenant from
// the store (its intent and claim keys, every intent's size, the pending
// approvals) at its first proposal (later counts read only the sizes of
// intents they did not count before), adds its own proposals, executions and
// votes since, and counts again in the background once the count is older
// than Quotas.Refresh (default 30 s). So a node sees other nodes' writes
// and the expiries of a retention within a refresh; N nodes may together
// overshoot a quota by what the others admitted in that time. A tenant
// whose first count cannot be read is refused (store_unavailable: nothing
// unbounded is admitted on an unknown count) and counted again at its next
// proposal; a recount that fails keeps the last count (still raised by this
// node's own proposals) and is tried again at the next proposal.

// Quotas bound each tenant's share of the live store; a zero field is no
// limit.
type Quotas struct {
	PendingIntents   int
	PendingApprovals int
	StoredBytes      int64
	// Refresh is how long a count read from the store is used before it is
	// read again (default DefaultQuotaRefresh).
	Refresh time.Duration
	// Now is the quotas' clock (default time.Now): when to count again,
	// and which approval requests have expired. It is the wall clock even
	// where Config.Now is replaced (an evidence run's stepping clock,
	// which a read would advance; there, requests may count as expired
	// earlier than they do for decisions).
	Now func() time.Time
}

// DefaultQuotaRefresh is how often a tenant's usage is recounted from the
// store unless Quotas.Refresh says otherwise.
const DefaultQuotaRefresh = 30 * time.Second

// Quota names, as in messages and the metric's label.
const (
	QuotaPendingIntents   = "pending_intents"
	QuotaPendingApprovals = "pending_approvals"
	QuotaStoredBytes      = "stored_bytes"
)

func (q Quotas) off() bool {
	return q.PendingIntents <= 0 && q.PendingApprovals <= 0 && q.StoredBytes <= 0
}

// counts are a tenant's usage.
type counts struct {
	pending, approvals int
	bytes              int64
}

func (c counts) plus(d counts) counts {
	return counts{c.pending + d.pending, c.approvals + d.approvals, c.bytes + d.bytes}
}

func (c counts) minus(d counts) counts {
	return counts{c.pending - d.pending, c.approvals - d.approvals, c.bytes - d.bytes}
}

// usage is one tenant's count on this node: base as read from the store
// at, and delta, this node's changes since.
type usage struct {
	check     sync.Mutex // serializes this tenant's first count, check and reservation
	counted   bool
	at        time.Time
	base      counts
	delta     counts
	recount   bool             // a background recount is running
	sizes     map[string]int64 // intent sizes by key, as last counted (owned by the count running)
	lastError error
}

// quotaBook holds every tenant's usage.
type quotaBook struct {
	mu sync.Mutex // guards by and each usage's counted, at, base, delta, recount
	by map[string]*usage
}

func (b *quotaBook) of(t tenant.ID) *usage {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.by == nil {
		b.by = map[string]*usage{}
	}
	u := b.by[t.String()]
	if u == nil {
		u = &usage{}
		b.by[t.String()] = u
	}
	return u
}

// add applies d to t's usage on this node.
func (g *Gate) quotaAdd(t tenant.ID, d counts) {
	if g.cfg.Quotas.off() {
		return
	}
	u := g.quota.of(t)
	g.quota.mu.Lock()
	u.delta = u.delta.plus(d)
	g.quota.mu.Unlock()
}

// countUsage reads t's usage from the store: its intent and claim keys,
// and the size of each intent not in sizes (the sizes of the last count,
// by key; an intent rewritten since keeps the size it was first counted
// at). It returns the sizes of the intents it counted.
func (g *Gate) countUsage(ctx context.Context, t tenant.ID, sizes map[string]int64) (counts, map[string]int64, error) {
	var c counts
	claims, err := g.cfg.Idempotency.Keys(ctx, tenant.IdempotencyKey(t, "*"))
	if err != nil {
		return c, nil, fmt.Errorf("list claims: %w", err)
	}
	started := make(map[string]bool, len(claims))
	prefix := t.String() + "."
	for _, k := range claims {
		started[IntentID(t, strings.TrimPrefix(k, prefix))] = true
	}
	keys, err := g.cfg.Intents.Keys(ctx, tenant.IntentKeyFilter(t))
	if err != nil {
		return c, nil, fmt.Errorf("list intents: %w", err)
	}
	next := make(map[string]int64, len(keys))
	for _, k := range keys {
		if g.cfg.Quotas.StoredBytes > 0 {
			n, ok := sizes[k]
			if !ok {
				e, err := g.cfg.Intents.Get(ctx, k)
				switch {
				case errors.Is(err, kv.ErrNotFound):
					continue // expired since the listing
				case err != nil:
					return c, nil, fmt.Errorf("read intent: %w", err)
				}
				n = int64(len(e.Value))
			}
			next[k] = n
			c.bytes += n
		}
		if !started[strings.TrimPrefix(k, prefix)] {
			c.pending++
		}
	}
	if g.cfg.Quotas.PendingApprovals > 0 && g.cfg.PendingApprovals != nil {
		if c.approvals, err = g.cfg.PendingApprovals(ctx, t, g.cfg.Quotas.Now()); err != nil {
			return c, nil, fmt.Errorf("count pending approvals: %w", err)
		}
	}
	return c, next, nil
}

// reserveQuota checks that t may hold one more intent of size bytes (one
// more pending approval if approval) and reserves it on this node; release
// undoes the reservation (the intent was not stored after all).
func (g *Gate) reserveQuota(ctx context.Context, t tenant.ID, size int64, approval bool) (release func(), err error) {
	q := g.cfg.Quotas
	if q.off() {
		return func() {}, nil
	}
	u := g.quota.of(t)
	u.check.Lock()
	defer u.check.Unlock()
	now := q.Now()
	g.quota.mu.Lock()
	counted, stale := u.counted, u.counted && !u.recount && now.Sub(u.at) >= q.Refresh
	if stale {
		u.recount = true
	}
	g.quota.mu.Unlock()
	switch {
	case !counted:
		c, sizes, err := g.countUsage(ctx, t, nil)
		if err != nil {
			return nil, storeErr("count the tenant's usage for its quotas", err)
		}
		g.quota.mu.Lock()
		u.counted, u.at, u.base, u.delta, u.sizes = true, now, c, counts{}, sizes
		g.quota.mu.Unlock()
	case stale:
		go g.recountUsage(t, u, now)
	}
	g.quota.mu.Lock()
	cur := u.base.plus(u.delta)
	g.quota.mu.Unlock()
	name, held, limit := "", int64(0), int64(0)
	switch {
	case q.PendingIntents > 0 && cur.pending+1 > q.PendingIntents:
		name, held, limit = QuotaPendingIntents, int64(cur.pending), int64(q.PendingIntents)
	case approval && q.PendingApprovals > 0 && g.cfg.PendingApprovals != nil && cur.approvals+1 > q.PendingApprovals:
		name, held, limit = QuotaPendingApprovals, int64(cur.approvals), int64(q.PendingApprovals)
	case q.StoredBytes > 0 && cur.bytes+size > q.StoredBytes:
		name, held, limit = QuotaStoredBytes, cur.bytes, q.StoredBytes
	}
	if name != "" {
		metrics.QuotaRefused.WithLabelValues(name).Inc()
		return nil, quotaErr(t, name, held, limit, size)
	}
	d := counts{pending: 1, bytes: size}
	if approval {
		d.approvals = 1
	}
	g.quota.mu.Lock()
	u.delta = u.delta.plus(d)
	g.quota.mu.Unlock()
	return func() { g.quotaAdd(t, counts{}.minus(d)) }, nil
}

func quotaErr(t tenant.ID, name string, held, limit, size int64) error {
	var msg string
	switch name {
	case QuotaPendingIntents:
		msg = fmt.Sprintf("tenant %s holds %d pending intents, its quota is %d: execute or let some expire before proposing more; nothing was stored", t, held, limit)
	case QuotaPendingApprovals:
		msg = fmt.Sprintf("tenant %s has %d approval requests pending, its quota is %d: have some decided before proposing more that need approval; nothing was stored", t, held, limit)
	default:
		msg = fmt.Sprintf("tenant %s stores %d bytes of intents, its quota is %d and this one takes %d: let some expire before proposing more; nothing was stored", t, held, limit, size)
	}
	return &contract.Error{Code: contract.CodeQuotaExceeded, Message: msg, Reasons: []string{name}}
}

// recountUsage reads t's usage again in the background; this node's
// changes made meanwhile are kept on top of it (a change the count also
// saw is then counted twice until the next recount: never fewer).
func (g *Gate) recountUsage(t tenant.ID, u *usage, now time.Time) {
	g.quota.mu.Lock()
	before, sizes := u.delta, u.sizes
	g.quota.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), max(g.cfg.Quotas.Refresh, 10*time.Second))
	defer cancel()
	c, sizes, err := g.countUsage(ctx, t, sizes)
	g.quota.mu.Lock()
	defer g.quota.mu.Unlock()
	u.recount = false
	if err != nil {
		// Keep the last count; the next proposal tries again.
		u.lastError = err
		g.cfg.Logger.Warn("recount a tenant's usage for its quotas; the last count stays in use", "tenant", t.String(), "err", err)
		return
	}
	u.base, u.at, u.delta, u.sizes, u.lastError = c, now, u.delta.minus(before), sizes, nil
}
