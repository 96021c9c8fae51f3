package gate_test

import (
	"context"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// TestNoFalseNothingChanged: when a write fails (or its acknowledgement is
// lost) the answer says what is certain, never "nothing was changed": the
// proposal record, the decision record and a vote's record.
func TestNoFalseNothingChanged(t *testing.T) {
	ctx := context.Background()
	for _, kind := range []string{audit.KindIntentProposed, audit.KindGateAllowed, approval.KindGranted} {
		t.Run(kind, func(t *testing.T) {
			ex := &recorder{runs: map[string]int{}}
			n := openNode(t, t.TempDir(), ex)
			fa := &failingAudit{Log: n.log, kind: kind}
			g, err := gate.New(gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: fa, Executors: ex, Switches: n.sw,
				Approvals: approval.NewStore(n.st.Approvals, fa, nil, nil), Node: "test"})
			if err != nil {
				t.Fatal(err)
			}
			fa.failing.Store(kind == audit.KindIntentProposed)
			v, _, err := g.Propose(ctx, acme, agent, writeReq("honest"), gate.Meta{})
			if kind == audit.KindIntentProposed {
				honest(t, err, "the intent was not stored")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fa.failing.Store(kind == approval.KindGranted)
			_, err = g.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{})
			if kind == approval.KindGranted {
				honest(t, err, "the vote is recorded")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fa.failing.Store(true)
			_, err = g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
			honest(t, err, "the action did not run")
			if ex.runs[v.Intent.ID] != 0 {
				t.Fatal("the executor ran without a recorded decision")
			}
		})
	}
}

func honest(t *testing.T, err error, want string) {
	t.Helper()
	if contract.ErrorCode(err) != contract.CodeStoreUnavailable || strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), want) {
		t.Fatalf("answer %q, want store_unavailable saying %q and never that nothing was changed", err, want)
	}
}
