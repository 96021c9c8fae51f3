package gate_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// failingAudit fails appends of one kind while failing is set.
type failingAudit struct {
	*audit.Log
	kind    string
	failing atomic.Bool
}

func (f *failingAudit) Append(ctx context.Context, t tenant.ID, e audit.Entry) (contract.AuditRecord, error) {
	if e.Kind == f.kind && f.failing.Load() {
		return contract.AuditRecord{}, errors.New("audit stream leader lost (injected)")
	}
	return f.Log.Append(ctx, t, e)
}

// failingGate is a gate on n whose audit fails appends of kind while
// fa.failing is set, with an approved intent proposed on it.
func failingGate(t *testing.T, n *node, ex gate.Executors, kind string) (*gate.Gate, *failingAudit, gate.View) {
	t.Helper()
	fa := &failingAudit{Log: n.log, kind: kind}
	g, err := gate.New(gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: fa, Executors: ex, Switches: n.sw,
		Approvals: approval.NewStore(n.st.Approvals, n.log, nil, nil), Work: n.st.Work, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := g.Propose(context.Background(), acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.DecideApproval(context.Background(), acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	return g, fa, v
}

// TestOutcomeRecordedWhenTheCallerGoesAway is break 4 of issue 13: a client
// that disconnected after the executor ran cancelled the writes that
// record the outcome; the intent stayed executing forever, the audit ended
// at execution.started, and the answer said nothing was changed.
func TestOutcomeRecordedWhenTheCallerGoesAway(t *testing.T) {
	ex := &recorder{runs: map[string]int{}, block: make(chan struct{})}
	n := openNode(t, t.TempDir(), ex)
	v, _, err := n.gate.Propose(context.Background(), acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	approve(t, n, v.Intent.ID)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
		done <- err
	}()
	waitFor(t, func() bool { return ex.count(v.Intent.ID) == 1 })
	cancel() // the client goes away mid-effect
	close(ex.block)
	if err := <-done; err != nil {
		t.Fatalf("Execute after the caller went away = %v, want the outcome recorded", err)
	}
	view, err := n.gate.Get(context.Background(), acme, v.Intent.ID)
	if err != nil || view.State != gate.StateSucceeded {
		t.Fatalf("state = %q (%v), want succeeded", view.State, err)
	}
	if k := kinds(t, n.log, acme); k[len(k)-1] != audit.KindExecutionSucceeded {
		t.Fatalf("the audit ends at %s, want %s: %v", k[len(k)-1], audit.KindExecutionSucceeded, k)
	}
}

// TestMissingOutcomeRecordIsRepaired: an execution whose outcome record
// could not be appended (the stream's leader died) is stored succeeded and
// marked; the answer never says nothing changed; the next execute writes
// the missing record instead of execution.duplicate.
func TestMissingOutcomeRecordIsRepaired(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	g, fa, v := failingGate(t, n, ex, audit.KindExecutionSucceeded)
	ctx := context.Background()
	fa.failing.Store(true)
	_, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	var ae *contract.Error
	if !errors.As(err, &ae) || ae.Code != contract.CodeStoreUnavailable || strings.Contains(ae.Message, "nothing was changed") || !strings.Contains(ae.Message, "ran") {
		t.Fatalf("Execute with the outcome record failing = %v, want store_unavailable saying the action ran", err)
	}
	if view, err := g.Get(ctx, acme, v.Intent.ID); err != nil || view.State != gate.StateSucceeded {
		t.Fatalf("state = %q (%v), want succeeded (the result is stored)", view.State, err)
	}
	fa.failing.Store(false)
	out, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	if err != nil || !out.Duplicate || out.Result.Status != contract.StatusSucceeded {
		t.Fatalf("repeat = %+v, %v", out, err)
	}
	k := kinds(t, n.log, acme)
	if n := slices.Index(k, audit.KindExecutionSucceeded); n < 0 || slices.Contains(k, audit.KindExecutionDuplicate) {
		t.Fatalf("after the repeat the audit is %v: want the missing %s written, no duplicate", k, audit.KindExecutionSucceeded)
	}
	// Repaired once: a further repeat is an ordinary duplicate.
	if _, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	k = kinds(t, n.log, acme)
	if k[len(k)-1] != audit.KindExecutionDuplicate || len(slices.DeleteFunc(slices.Clone(k), func(s string) bool { return s != audit.KindExecutionSucceeded })) != 1 {
		t.Fatalf("audit = %v: want one %s and a duplicate last", k, audit.KindExecutionSucceeded)
	}
	if ex.count(v.Intent.ID) != 1 {
		t.Fatalf("the effect ran %d times", ex.count(v.Intent.ID))
	}
	replayPasses(t, n.log, acme)
}

// TestMissingOutcomeRecordIsRepairedInTheBackground: the node that could
// not write an outcome record retries it by itself; no caller has to
// execute the intent again.
func TestMissingOutcomeRecordIsRepairedInTheBackground(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	g, fa, v := failingGate(t, n, ex, audit.KindExecutionSucceeded)
	fa.failing.Store(true)
	if _, err := g.Execute(context.Background(), acme, agent, v.Intent.ID, gate.Meta{}); contract.ErrorCode(err) != contract.CodeStoreUnavailable {
		t.Fatalf("execute with the outcome record failing = %v", err)
	}
	fa.failing.Store(false) // the stream is back
	var k []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if k = kinds(t, n.log, acme); slices.Contains(k, audit.KindExecutionSucceeded) {
			break
		}
	}
	if n := len(slices.DeleteFunc(slices.Clone(k), func(s string) bool { return s != audit.KindExecutionSucceeded })); n != 1 || slices.Contains(k, audit.KindExecutionDuplicate) {
		t.Fatalf("audit = %v, want exactly one %s and no duplicate", k, audit.KindExecutionSucceeded)
	}
	replayPasses(t, n.log, acme)
}

// TestMissingOutcomeRecordIsWrittenByAnotherNode: the node that could not
// write an outcome record never gets to (it stays cut off from the audit
// stream, as a node that died would); another node writes it, once, when
// its sweep finds the note, when it reads the intent, or when it lists the
// executions in doubt. The note is gone afterwards and the chain replays.
func TestMissingOutcomeRecordIsWrittenByAnotherNode(t *testing.T) {
	for _, how := range []string{"sweep", "read", "in-doubt listing"} {
		t.Run(how, func(t *testing.T) {
			ex := &recorder{runs: map[string]int{}}
			n := openNode(t, t.TempDir(), ex)
			g, fa, v := failingGate(t, n, ex, audit.KindExecutionSucceeded)
			fa.failing.Store(true) // for good: this node never writes it
			ctx := context.Background()
			if _, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); contract.ErrorCode(err) != contract.CodeStoreUnavailable {
				t.Fatalf("execute with the outcome record failing = %v", err)
			}
			notes, err := n.st.Idempotency.Keys(ctx, tenant.RepairKeyFilter)
			if err != nil || len(notes) != 1 {
				t.Fatalf("notes for the sweep: %v (%v), want one", notes, err)
			}
			switch how {
			case "sweep":
				if got, err := n.gate.Sweep(ctx); got != 1 || err != nil {
					t.Fatalf("sweep = %d, %v; want 1 record written", got, err)
				}
			case "read":
				if view, err := n.gate.Get(ctx, acme, v.Intent.ID); err != nil || view.State != gate.StateSucceeded {
					t.Fatalf("read on the other node: %q, %v", view.State, err)
				}
			case "in-doubt listing":
				if list, err := n.gate.ListInDoubt(ctx, acme); err != nil || len(list) != 0 {
					t.Fatalf("in doubt: %+v, %v", list, err)
				}
			}
			k := kinds(t, n.log, acme)
			if got := len(slices.DeleteFunc(slices.Clone(k), func(s string) bool { return s != audit.KindExecutionSucceeded })); got != 1 || slices.Contains(k, audit.KindExecutionDuplicate) {
				t.Fatalf("audit = %v, want exactly one %s and no duplicate", k, audit.KindExecutionSucceeded)
			}
			if notes, err := n.st.Idempotency.Keys(ctx, tenant.RepairKeyFilter); err != nil || len(notes) != 0 {
				t.Fatalf("notes after the repair: %v (%v), want none", notes, err)
			}
			if got, err := n.gate.Sweep(ctx); got != 0 || err != nil {
				t.Fatalf("second sweep = %d, %v; want nothing to do", got, err)
			}
			if k2 := kinds(t, n.log, acme); len(k2) != len(k) {
				t.Fatalf("the second sweep wrote %v", k2[len(k):])
			}
			if ex.count(v.Intent.ID) != 1 {
				t.Fatalf("the effect ran %d times", ex.count(v.Intent.ID))
			}
			replayPasses(t, n.log, acme)
		})
	}
}
