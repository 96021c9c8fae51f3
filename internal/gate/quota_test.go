package gate_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// openQuotaNode is a node whose gate enforces q, on a fixed quota clock
// (never recounting).
func openQuotaNode(tb testing.TB, q gate.Quotas) *node {
	tb.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q.Now = func() time.Time { return fixed }
	sw := &switches{}
	approvals := approval.NewStore(st.Approvals, log, nil, nil)
	g, err := gate.New(gate.Config{Intents: st.Intents, Idempotency: st.Idempotency, Audit: log, Executors: &recorder{runs: map[string]int{}}, Switches: sw,
		Approvals: approvals, Work: st.Work, Now: c.Now, Node: "test", Quotas: q, PendingApprovals: approvals.PendingCount})
	if err != nil {
		tb.Fatal(err)
	}
	return &node{st, log, g, sw}
}

func readReq(key string) contract.IntentRequest {
	return contract.IntentRequest{Action: action.FSRead, Target: "notes/a.txt", IdempotencyKey: key}
}

var (
	beta      = tenant.MustParse("beta")
	betaAgent = &auth.Principal{ID: "key_beta_agent", Name: "beta-agent", Role: auth.RoleAgent, Tenants: []string{"beta"}, Actions: []string{"*"}}
)

// refusedWithNothingWritten checks a proposal is refused by quota name and
// leaves t's chain and intents as they were.
func refusedWithNothingWritten(tb testing.TB, n *node, t tenant.ID, req contract.IntentRequest, name string) {
	tb.Helper()
	ctx := context.Background()
	before := kinds(tb, n.log, t)
	p := agent
	if t == beta {
		p = betaAgent
	}
	_, _, err := n.gate.Propose(ctx, t, p, req, gate.Meta{})
	var ce *contract.Error
	if contract.ErrorCode(err) != contract.CodeQuotaExceeded || !errors.As(err, &ce) || !slices.Equal(ce.Reasons, []string{name}) || ce.RetryAfter != 0 {
		tb.Fatalf("proposal %s: %v, want quota_exceeded (%s) without Retry-After", req.IdempotencyKey, err, name)
	}
	if after := kinds(tb, n.log, t); !slices.Equal(before, after) {
		tb.Fatalf("the refused proposal wrote audit records: %v, then %v", before, after)
	}
	if _, err := n.gate.Get(ctx, t, gate.IntentID(t, req.IdempotencyKey)); contract.ErrorCode(err) != contract.CodeNotFound {
		tb.Fatalf("the refused intent: %v, want not found (nothing stored)", err)
	}
}

// TestPendingIntentsQuota (issue 16): with a quota of 3 pending intents the
// fourth proposal is refused, nothing written; another tenant is not
// affected; once one executes, a proposal is admitted again.
func TestPendingIntentsQuota(t *testing.T) {
	n := openQuotaNode(t, gate.Quotas{PendingIntents: 3})
	ctx := context.Background()
	var ids []string
	for i := range 3 {
		v, _, err := n.gate.Propose(ctx, acme, agent, readReq("r"+string(rune('0'+i))), gate.Meta{})
		if err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
		ids = append(ids, v.Intent.ID)
	}
	// A repeat of a stored proposal is answered, not counted.
	if _, created, err := n.gate.Propose(ctx, acme, agent, readReq("r0"), gate.Meta{}); err != nil || created {
		t.Fatalf("repeat: %v created=%t", err, created)
	}
	refusedWithNothingWritten(t, n, acme, readReq("r3"), gate.QuotaPendingIntents)
	if _, _, err := n.gate.Propose(ctx, beta, betaAgent, readReq("b0"), gate.Meta{}); err != nil {
		t.Fatalf("beta while acme is at its quota: %v", err)
	}
	if _, err := n.gate.Execute(ctx, acme, agent, ids[0], gate.Meta{}); err != nil {
		t.Fatalf("execute: %v", err)
	}
	if _, _, err := n.gate.Propose(ctx, acme, agent, readReq("r3"), gate.Meta{}); err != nil {
		t.Fatalf("after one executed: %v", err)
	}
	refusedWithNothingWritten(t, n, acme, readReq("r4"), gate.QuotaPendingIntents)
}

// TestStoredBytesQuota: intents of about 3 KiB against a quota of 10 KiB:
// the proposal that would pass it is refused, nothing written; a smaller
// one still fits.
func TestStoredBytesQuota(t *testing.T) {
	n := openQuotaNode(t, gate.Quotas{StoredBytes: 10 << 10})
	ctx := context.Background()
	big := func(k string) contract.IntentRequest {
		return contract.IntentRequest{Action: "fs.write", Target: "notes/a.txt", Params: map[string]string{"content": strings.Repeat("x", 3<<10)}, IdempotencyKey: k}
	}
	admitted := 0
	for i := range 10 {
		req := big("w" + string(rune('0'+i)))
		_, _, err := n.gate.Propose(ctx, acme, agent, req, gate.Meta{})
		if err == nil {
			admitted++
			continue
		}
		if admitted < 2 {
			t.Fatalf("refused after %d intents of 3 KiB under a 10 KiB quota: %v", admitted, err)
		}
		refusedWithNothingWritten(t, n, acme, req, gate.QuotaStoredBytes)
		break
	}
	if admitted == 10 {
		t.Fatal("ten intents of 3 KiB fit a quota of 10 KiB")
	}
	var total int
	keys, err := n.st.Intents.Keys(ctx, tenant.IntentKeyFilter(acme))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		e, err := n.st.Intents.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		total += len(e.Value)
	}
	if total > 10<<10 {
		t.Fatalf("acme stores %d bytes of intents, over its quota of %d", total, 10<<10)
	}
}

// TestPendingApprovalsQuota: two intents awaiting approval fill a quota of
// two; a third that needs approval is refused, an A0 read (no approval) is
// admitted; once one is approved, a third is admitted.
func TestPendingApprovalsQuota(t *testing.T) {
	n := openQuotaNode(t, gate.Quotas{PendingApprovals: 2})
	ctx := context.Background()
	var ids []string
	for i := range 2 {
		v, _, err := n.gate.Propose(ctx, acme, agent, writeReq("w"+string(rune('0'+i))), gate.Meta{})
		if err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
		ids = append(ids, v.Intent.ID)
	}
	refusedWithNothingWritten(t, n, acme, writeReq("w2"), gate.QuotaPendingApprovals)
	if _, _, err := n.gate.Propose(ctx, acme, agent, readReq("r0"), gate.Meta{}); err != nil {
		t.Fatalf("an A0 read needs no approval: %v", err)
	}
	approve(t, n, ids[0])
	if _, _, err := n.gate.Propose(ctx, acme, agent, writeReq("w2"), gate.Meta{}); err != nil {
		t.Fatalf("after one was approved: %v", err)
	}
}

// TestQuotaCountsWhatIsStored: a node started on a store that already
// holds a tenant's pending intents counts them (its first proposal reads
// the store), so a restart does not reset a quota.
func TestQuotaCountsWhatIsStored(t *testing.T) {
	dir := t.TempDir()
	first := openNode(t, dir, &recorder{runs: map[string]int{}})
	for i := range 3 {
		if _, _, err := first.gate.Propose(context.Background(), acme, agent, readReq("r"+string(rune('0'+i))), gate.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	first.st.Close()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{t: fixed}
	approvals := approval.NewStore(st.Approvals, log, nil, nil)
	g, err := gate.New(gate.Config{Intents: st.Intents, Idempotency: st.Idempotency, Audit: log, Executors: &recorder{runs: map[string]int{}}, Switches: &switches{},
		Approvals: approvals, Now: c.Now, Node: "test", Quotas: gate.Quotas{PendingIntents: 3, Now: func() time.Time { return fixed }}, PendingApprovals: approvals.PendingCount})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.Propose(context.Background(), acme, agent, readReq("r3"), gate.Meta{}); contract.ErrorCode(err) != contract.CodeQuotaExceeded {
		t.Fatalf("a fourth pending intent after a restart: %v, want quota_exceeded", err)
	}
}
