package gate_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// Findings of the adversarial review of the lease and repair changes.

// twoNodes returns node A (executor ex, wall clock) and node B (clock
// ahead by skew) on one store, and an approved intent proposed on A.
func twoNodes(t *testing.T, ex gate.Executors, skew time.Duration, auditor gate.Auditor) (a, b *gate.Gate, n *node, id string) {
	t.Helper()
	n = openNode(t, t.TempDir(), &recorder{runs: map[string]int{}})
	if auditor == nil {
		auditor = n.log
	}
	mk := func(name string, ex gate.Executors, now func() time.Time) *gate.Gate {
		g, err := gate.New(gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: auditor, Executors: ex, Switches: &switches{},
			Approvals: approval.NewStore(n.st.Approvals, n.log, nil, nil), Node: name, Lease: 300 * time.Millisecond, ExecTimeout: time.Minute, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	a = mk("node-a", ex, time.Now)
	b = mk("node-b", &recorder{runs: map[string]int{}}, func() time.Time { return time.Now().Add(skew) })
	v, _, err := a.Propose(context.Background(), acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.DecideApproval(context.Background(), acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	return a, b, n, v.Intent.ID
}

// TestLeaseToleratesClockSkew: a reader whose clock runs ahead of the
// renewing node's by less than a lease never reads a running execution in
// doubt.
func TestLeaseToleratesClockSkew(t *testing.T) {
	ex := &recorder{runs: map[string]int{}, block: make(chan struct{})}
	a, b, _, id := twoNodes(t, ex, 250*time.Millisecond, nil)
	done := make(chan error, 1)
	go func() { _, err := a.Execute(context.Background(), acme, agent, id, gate.Meta{}); done <- err }()
	waitFor(t, func() bool { return ex.count(id) == 1 })
	for until := time.Now().Add(1500 * time.Millisecond); time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
		if v, err := b.Get(context.Background(), acme, id); err != nil || v.State != gate.StateExecuting {
			t.Fatalf("a node 250ms ahead reads %q (%v) while the execution runs", v.State, err)
		}
	}
	close(ex.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestOutcomeAfterResolveIsRecorded: past the margin (a clock far ahead, or
// renewals failing), a resolve can happen while the effect still runs; when
// the executor then returns, its real outcome is recorded beside the
// resolution, which stands, and the answer says so.
func TestOutcomeAfterResolveIsRecorded(t *testing.T) {
	ex := &recorder{runs: map[string]int{}, block: make(chan struct{})}
	a, b, n, id := twoNodes(t, ex, 5*time.Second, nil)
	done := make(chan error, 1)
	go func() { _, err := a.Execute(context.Background(), acme, agent, id, gate.Meta{}); done <- err }()
	waitFor(t, func() bool { return ex.count(id) == 1 })
	if _, err := b.Resolve(context.Background(), acme, operator, id, gate.Resolution{Outcome: contract.StatusFailed, Reason: "looks dead"}, gate.Meta{}); err != nil {
		t.Fatalf("resolve on a node 5s ahead: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // at least one renewal finds the claim changed
	close(ex.block)
	if err := <-done; contract.ErrorCode(err) != contract.CodeConflict {
		t.Fatalf("node A's answer after the resolution = %v, want conflict naming both outcomes", err)
	}
	k := kinds(t, n.log, acme)
	if !slices.Contains(k, gate.KindExecutionResolved) || k[len(k)-1] != gate.KindOutcomeAfterResolve {
		t.Fatalf("audit = %v: want the resolution and then the late outcome", k)
	}
	if v, err := a.Get(context.Background(), acme, id); err != nil || v.State != contract.StatusFailed {
		t.Fatalf("state = %q (%v): the resolution must stand", v.State, err)
	}
}

// TestConcurrentRepairsWriteOneRecord: of concurrent repeats of an
// execution whose outcome record is missing, exactly one writes it.
func TestConcurrentRepairsWriteOneRecord(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	g, fa, v := failingGate(t, n, ex, audit.KindExecutionSucceeded)
	ctx := context.Background()
	fa.failing.Store(true)
	if _, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); contract.ErrorCode(err) != contract.CodeStoreUnavailable {
		t.Fatalf("first execute = %v", err)
	}
	fa.failing.Store(false)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
		}()
	}
	wg.Wait()
	k := kinds(t, n.log, acme)
	if n := len(slices.DeleteFunc(slices.Clone(k), func(s string) bool { return s != audit.KindExecutionSucceeded })); n != 1 {
		t.Fatalf("%d %s records after 8 concurrent repeats, want 1: %v", n, audit.KindExecutionSucceeded, k)
	}
}

// TestResolveNeedsAnEntitledOperator: an agent, or an operator whose grants
// do not cover the action, may not resolve it.
func TestResolveNeedsAnEntitledOperator(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	v, _, _ := n.gate.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	for _, p := range []*auth.Principal{
		agent,
		{ID: "key_reader_op", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"A0"}},
		{ID: "key_beta_op", Role: auth.RoleOperator, Tenants: []string{"beta"}, Actions: []string{"*"}},
	} {
		if _, err := n.gate.Resolve(ctx, acme, p, v.Intent.ID, gate.Resolution{Outcome: contract.StatusFailed, Reason: "x"}, gate.Meta{}); contract.ErrorCode(err) != contract.CodeForbidden {
			t.Errorf("resolve by %s = %v, want forbidden", p.ID, err)
		}
	}
}

// principalTable is a key registry stand-in: every ID is an acme operator
// granted everything; IDs in revoked are gone.
type principalTable struct{ revoked map[string]bool }

func (p principalTable) Principal(_ context.Context, id string) (*auth.Principal, error) {
	if p.revoked[id] {
		return nil, auth.ErrUnauthenticated
	}
	return &auth.Principal{ID: id, Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}}, nil
}

// TestRevokedApproverNoLongerCounts: a vote cast with a key that is revoked
// afterwards (a stolen operator key, found and revoked) stops counting; the
// decision records which votes were withdrawn, so replay reproduces it.
func TestRevokedApproverNoLongerCounts(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	table := principalTable{revoked: map[string]bool{}}
	g, err := gate.New(gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: n.log, Executors: ex, Switches: n.sw,
		Approvals: approval.NewStore(n.st.Approvals, n.log, nil, nil), Work: n.st.Work, Node: "test", Principals: table})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, _, _ := g.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	if _, err := g.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	table.revoked[operator.ID] = true
	out, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	if contract.ErrorCode(err) != contract.CodeBlocked || !slices.Contains(out.Decision.Reasons, gate.ReasonApprovalRequired) || ex.count(v.Intent.ID) != 0 {
		t.Fatalf("execute with the only approver revoked = %+v, %v, want blocked approval_required", out.Decision.Reasons, err)
	}
	// Another operator's vote completes it again.
	if _, err := g.DecideApproval(ctx, acme, operator2, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "re-reviewed"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil || ex.count(v.Intent.ID) != 1 {
		t.Fatalf("execute after a valid second vote = %v (runs %d)", err, ex.count(v.Intent.ID))
	}
	replayPasses(t, n.log, acme)
}
