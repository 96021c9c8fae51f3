package gate_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/kv"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

var operator2 = &auth.Principal{ID: "key_op2", Name: "op2", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}}

func propose(tb testing.TB, n *node, action, key string) gate.View {
	tb.Helper()
	req := contract.IntentRequest{Action: action, Target: "x/" + key, Params: map[string]string{"content": "c", "body": "b"}, IdempotencyKey: key}
	if action == "http.post" {
		req.Target = "http://127.0.0.1:1/x"
	}
	v, _, err := n.gate.Propose(context.Background(), acme, agent, req, gate.Meta{})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func blockedWith(tb testing.TB, err error, reason string) {
	tb.Helper()
	var ae *contract.Error
	if !errors.As(err, &ae) || ae.Code != contract.CodeBlocked || ae.Reasons[len(ae.Reasons)-1] != reason {
		tb.Fatalf("err = %v, want blocked with %s", err, reason)
	}
}

func vote(n *node, p *auth.Principal, id, decision string) error {
	_, err := n.gate.DecideApproval(context.Background(), acme, p, id, contract.ApprovalDecision{Decision: decision, Reason: "because"}, gate.Meta{})
	return err
}

// TestSideEffectClassesNeedApproval: A1, A2 and A3 are denied by default,
// run once approved (A3 by two distinct operators), and A0 needs none.
func TestSideEffectClassesNeedApproval(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	for _, c := range []struct {
		action string
		need   int
	}{{"fs.write", 1}, {"http.post", 1}, {"fs.delete", 2}, {"fs.read", 0}} {
		t.Run(c.action, func(t *testing.T) {
			v := propose(t, n, c.action, "need-"+strings.ReplaceAll(c.action, ".", "-"))
			if c.need == 0 {
				if _, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil {
					t.Fatalf("A0 without approval: %v", err)
				}
				return
			}
			_, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
			blockedWith(t, err, gate.ReasonApprovalRequired)
			if err := vote(n, operator, v.Intent.ID, "approve"); err != nil {
				t.Fatal(err)
			}
			if c.need == 2 {
				_, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
				blockedWith(t, err, gate.ReasonApprovalRequired) // one approver is not enough for A3
				if err := vote(n, operator, v.Intent.ID, "approve"); contract.ErrorCode(err) != contract.CodeConflict {
					t.Fatalf("same operator twice: %v", err)
				}
				if err := vote(n, operator2, v.Intent.ID, "approve"); err != nil {
					t.Fatal(err)
				}
			}
			out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
			if err != nil || out.Result.Status != contract.StatusSucceeded {
				t.Fatalf("approved execute: %+v %v", out, err)
			}
			rec, _, _ := approval.NewStore(n.st.Approvals, n.log, nil, nil).Get(ctx, acme, v.Intent.ID)
			if rec.Status != approval.StatusExecuted {
				t.Fatalf("approval status after execution = %s", rec.Status)
			}
			// Consumed: a repeat returns the first result, never a second run.
			if out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil || !out.Duplicate || ex.count(v.Intent.ID) != 1 {
				t.Fatalf("repeat after consumption: %+v %v, runs %d", out, err, ex.count(v.Intent.ID))
			}
			if err := vote(n, operator2, v.Intent.ID, "approve"); contract.ErrorCode(err) != contract.CodeConflict && c.need == 1 {
				t.Fatalf("vote on an executed approval: %v", err)
			}
		})
	}
}

func TestSeparationOfDuties(t *testing.T) {
	n := openNode(t, t.TempDir(), &recorder{runs: map[string]int{}})
	v := propose(t, n, "fs.write", "sod")
	// The proposer, even as an operator, cannot approve their own intent.
	selfOp := &auth.Principal{ID: agent.ID, Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}}
	if err := vote(n, selfOp, v.Intent.ID, "approve"); contract.ErrorCode(err) != gate.CodeSelfApproval {
		t.Fatalf("self approval: %v", err)
	}
	// An agent is not an operator.
	other := &auth.Principal{ID: "key_other_agent", Role: auth.RoleAgent, Tenants: []string{"acme"}}
	if err := vote(n, other, v.Intent.ID, "approve"); contract.ErrorCode(err) != contract.CodeForbidden {
		t.Fatalf("agent approval: %v", err)
	}
	// An operator of another tenant is not an operator here.
	foreign := &auth.Principal{ID: "key_foreign", Role: auth.RoleOperator, Tenants: []string{"beta"}, Actions: []string{"*"}}
	if err := vote(n, foreign, v.Intent.ID, "approve"); contract.ErrorCode(err) != contract.CodeForbidden {
		t.Fatalf("foreign operator: %v", err)
	}
	// A denial is final.
	if err := vote(n, operator, v.Intent.ID, "deny"); err != nil {
		t.Fatal(err)
	}
	if err := vote(n, operator2, v.Intent.ID, "approve"); contract.ErrorCode(err) != contract.CodeConflict {
		t.Fatalf("approve after deny: %v", err)
	}
	_, err := n.gate.Execute(context.Background(), acme, agent, v.Intent.ID, gate.Meta{})
	blockedWith(t, err, gate.ReasonApprovalDenied)
	replayPasses(t, n.log, acme)
}

func TestApprovalExpires(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	// A node whose approvals last 3 s of its step clock (1 s per reading).
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g, err := gate.New(gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: n.log, Executors: ex, Switches: n.sw,
		Approvals: approval.NewStore(n.st.Approvals, n.log, func(tenant.ID) time.Duration { return 3 * time.Second }, nil), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	n.gate = g
	v := propose(t, n, "fs.write", "exp")
	if err := vote(n, operator, v.Intent.ID, "approve"); err != nil {
		t.Fatal(err)
	}
	c.Now()
	c.Now()
	_, err = n.gate.Execute(context.Background(), acme, agent, v.Intent.ID, gate.Meta{})
	blockedWith(t, err, gate.ReasonApprovalExpired)
	if err := vote(n, operator2, v.Intent.ID, "approve"); contract.ErrorCode(err) != contract.CodeConflict {
		t.Fatalf("approve after expiry: %v", err)
	}
	if ex.count(v.Intent.ID) != 0 {
		t.Fatal("an expired approval executed")
	}
	var sawExpired bool
	_ = n.log.Scan(context.Background(), acme, 0, 0, func(_ []byte, r contract.AuditRecord) error {
		sawExpired = sawExpired || r.Kind == approval.KindExpired
		return nil
	})
	if !sawExpired {
		t.Fatal("the expiry was not audited")
	}
	replayPasses(t, n.log, acme)
}

// TestApprovalBoundToIntentHash: an approval whose hash is not the
// intent's (the intent changed) does not authorize it.
func TestApprovalBoundToIntentHash(t *testing.T) {
	n := openNode(t, t.TempDir(), &recorder{runs: map[string]int{}})
	v := propose(t, n, "fs.write", "bound")
	if err := vote(n, operator, v.Intent.ID, "approve"); err != nil {
		t.Fatal(err)
	}
	// Rewrite the stored approval as if it had been granted to another version.
	store := approval.NewStore(n.st.Approvals, n.log, nil, nil)
	rec, rev, _ := store.Get(context.Background(), acme, v.Intent.ID)
	rec.IntentHash = "0000000000000000000000000000000000000000000000000000000000000001"
	data, _ := jsonMarshal(rec)
	if _, err := n.st.Approvals.Put(context.Background(), tenant.ApprovalKey(acme, v.Intent.ID), data, kv.PutOptions{Revision: rev}); err != nil {
		t.Fatal(err)
	}
	_, err := n.gate.Execute(context.Background(), acme, agent, v.Intent.ID, gate.Meta{})
	blockedWith(t, err, gate.ReasonApprovalInvalid)
}

// TestWorkerExecutesApprovedIntents: an intent submitted with
// execute_when_approved is executed by the background worker once approved,
// through the same gate, exactly once.
func TestWorkerExecutesApprovedIntents(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = n.gate.RunWorker(ctx, staticPrincipals{agent.ID: agent})
	}()
	req := contract.IntentRequest{Action: "fs.write", Target: "w.txt", Params: map[string]string{"content": "x"}, IdempotencyKey: "auto", ExecuteWhenApproved: true}
	v, _, err := n.gate.Propose(ctx, acme, agent, req, gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := vote(n, operator, v.Intent.ID, "approve"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ex.count(v.Intent.ID) == 1 })
	waitFor(t, func() bool {
		got, err := n.gate.Get(context.Background(), acme, v.Intent.ID)
		return err == nil && got.State == gate.StateSucceeded
	})
	var kindsSeen []string
	_ = n.log.Scan(context.Background(), acme, 0, 0, func(_ []byte, r contract.AuditRecord) error {
		kindsSeen = append(kindsSeen, r.Kind)
		return nil
	})
	if kindsSeen[len(kindsSeen)-1] != audit.KindExecutionSucceeded {
		t.Fatalf("kinds = %v", kindsSeen)
	}
	cancel()
	<-done
	if ex.count(v.Intent.ID) != 1 {
		t.Fatalf("worker ran the intent %d times", ex.count(v.Intent.ID))
	}
	replayPasses(t, n.log, acme)
}

// TestWorkerRespectsKillSwitch: the worker's execution passes the same
// gate; with the switch engaged it is blocked and audited.
func TestWorkerRespectsKillSwitch(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	n.sw.set(true, false, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = n.gate.RunWorker(ctx, staticPrincipals{agent.ID: agent}) }()
	req := contract.IntentRequest{Action: "fs.write", Target: "w.txt", Params: map[string]string{"content": "x"}, IdempotencyKey: "auto-ks", ExecuteWhenApproved: true}
	v, _, err := n.gate.Propose(ctx, acme, agent, req, gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := vote(n, operator, v.Intent.ID, "approve"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		got, err := n.gate.Get(context.Background(), acme, v.Intent.ID)
		return err == nil && got.State == gate.StateBlocked && got.LastDecision.Reasons[0] == gate.ReasonGlobalEngaged
	})
	if ex.count(v.Intent.ID) != 0 {
		t.Fatal("the worker executed through an engaged kill switch")
	}
}

type staticPrincipals map[string]*auth.Principal

func (s staticPrincipals) Principal(_ context.Context, id string) (*auth.Principal, error) {
	if p, ok := s[id]; ok {
		return p, nil
	}
	return nil, auth.ErrUnauthenticated
}
