package gate_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/kv"
)

// The findings of this adversarial review of the declared approval
// rules and the honest store errors, each reproduced first.

const defaultRules = `"default": {"A0": {"approvals": 0, "roles": ["operator", "admin"]}, "A1": {"approvals": 1, "roles": ["operator", "admin"]},
 "A2": {"approvals": 1, "roles": ["operator", "admin"]}, "A3": {"approvals": 2, "roles": ["operator", "admin"]}}`

// registry is a key registry stand-in holding the test principals as they
// are now.
type registry map[string]*auth.Principal

func (r registry) Principal(_ context.Context, id string) (*auth.Principal, error) {
	if p, ok := r[id]; ok {
		return p, nil
	}
	return nil, auth.ErrUnauthenticated
}

var people = registry{agent.ID: agent, operator.ID: operator, operator2.ID: operator2}

// gateWith is another gate on n's store deciding under rules ("" for the
// built-in ones), as another node started with other flags would.
func gateWith(t *testing.T, n *node, ex gate.Executors, rules string, opts ...func(*gate.Config)) *gate.Gate {
	t.Helper()
	st := approval.NewStore(n.st.Approvals, n.log, nil, nil)
	if rules != "" {
		r, err := approval.ParseRules([]byte(`{` + defaultRules + `, "tenants": {"acme": ` + rules + `}}`))
		if err != nil {
			t.Fatal(err)
		}
		st.SetRules(r)
	}
	cfg := gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: n.log, Executors: ex, Switches: n.sw,
		Approvals: st, Node: "other", Allowlist: []string{"127.0.0.1:1"}, Principals: people}
	for _, o := range opts {
		o(&cfg)
	}
	g, err := gate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestFrozenApprovalBindsUnderLaterRules: an A0 read whose approval a
// tenant's rules required, and an operator denied, stays denied on a node
// whose rules ask none (the record is read whatever the rules say).
func TestFrozenApprovalBindsUnderLaterRules(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	strict := gateWith(t, n, ex, `{"A0": {"approvals": 1}}`)
	plain := gateWith(t, n, ex, "")
	v, _, err := strict.Propose(ctx, acme, agent, contract.IntentRequest{Action: "fs.read", Target: "x/a0", IdempotencyKey: "a0"}, gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "deny", Reason: "no"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	_, err = plain.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	blockedWith(t, err, gate.ReasonApprovalDenied)
	if ex.count(v.Intent.ID) != 0 {
		t.Fatal("a denied intent ran")
	}
	replayPasses(t, n.log, acme)
}

// TestVotesOfRolesTheRulesExcludeDoNotCount: acme lets only admins approve
// A1; an operator's vote cast on a node without those rules does not count
// where they hold (the gate rechecks every approver against the rules).
func TestVotesOfRolesTheRulesExcludeDoNotCount(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	plain := gateWith(t, n, ex, "")
	adminsOnly := gateWith(t, n, ex, `{"A1": {"roles": ["admin"]}}`)
	v, _, err := adminsOnly.Propose(ctx, acme, agent, writeReq("roles"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminsOnly.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{}); contract.ErrorCode(err) != contract.CodeForbidden {
		t.Fatalf("an operator voting where only admins approve: %v, want forbidden", err)
	}
	if _, err := plain.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	out, err := adminsOnly.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	blockedWith(t, err, gate.ReasonApprovalRequired)
	if !slices.Contains(out.Decision.Reasons, gate.ReasonApprovalRequired) || ex.count(v.Intent.ID) != 0 {
		t.Fatalf("admins-only A1 on an operator's vote: %v", out.Decision.Reasons)
	}
	replayPasses(t, n.log, acme)
}

// TestRaisedRulesApplyToOpenRequests: acme's A1 is raised to two while a
// request that froze one is open; one vote does not complete it (no early
// queueing), the second does and the worker runs it.
func TestRaisedRulesApplyToOpenRequests(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raised := gateWith(t, n, ex, `{"A1": {"approvals": 2}}`, func(c *gate.Config) {
		c.Work = n.st.Work
		c.Now = (&clock{t: time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)}).Now
	})
	go func() { _ = raised.RunWorker(ctx, people) }()
	req := writeReq("raised")
	req.ExecuteWhenApproved = true
	v, _, err := n.gate.Propose(ctx, acme, agent, req, gate.Meta{}) // under the built-in rules: froze one
	if err != nil {
		t.Fatal(err)
	}
	rec, err := raised.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{})
	if err != nil || rec.Status != approval.StatusPending || rec.Required != 2 {
		t.Fatalf("after one vote under raised rules: %s required %d %v, want pending, 2", rec.Status, rec.Required, err)
	}
	if _, err := raised.DecideApproval(ctx, acme, operator2, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ex.count(v.Intent.ID) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the fully approved execute_when_approved intent never ran")
		}
	}
}

// flakyGet fails reads while fail is set.
type flakyGet struct {
	kv.Bucket
	fail atomic.Bool
}

func (f *flakyGet) Get(ctx context.Context, key string) (kv.Entry, error) {
	if f.fail.Load() {
		return kv.Entry{}, errors.New("stream leader lost (injected)")
	}
	return f.Bucket.Get(ctx, key)
}

// TestRepeatAfterItsDecisionRecordIsHonest: a repeated execute whose claim
// cannot be read after its decision was recorded does not say nothing was
// changed.
func TestRepeatAfterItsDecisionRecordIsHonest(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	idem := &flakyGet{Bucket: n.st.Idempotency}
	g := gateWith(t, n, ex, "", func(c *gate.Config) { c.Idempotency = idem })
	v, _, err := g.Propose(ctx, acme, agent, contract.IntentRequest{Action: "fs.read", Target: "x/r", IdempotencyKey: "rep"}, gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	idem.fail.Store(true)
	_, err = g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	idem.fail.Store(false)
	honest(t, err, "the decision is recorded")
}

// TestApprovalRecordsSurviveAuditFailures: an approval request whose
// record could not be written is recorded on the retry; a consumption
// whose record could not be written leaves the execution in doubt (fail
// closed), never a run without approval.executed.
func TestApprovalRecordsSurviveAuditFailures(t *testing.T) {
	t.Run("request", func(t *testing.T) {
		ex := &recorder{runs: map[string]int{}}
		n := openNode(t, t.TempDir(), ex)
		ctx := context.Background()
		fa := &failingAudit{Log: n.log, kind: approval.KindRequested}
		g := gateWith(t, n, ex, "", func(c *gate.Config) { c.Approvals = approval.NewStore(n.st.Approvals, fa, nil, nil) })
		fa.failing.Store(true)
		if _, _, err := g.Propose(ctx, acme, agent, writeReq("req"), gate.Meta{}); err == nil {
			t.Fatal("a proposal whose approval request could not be recorded succeeded")
		}
		fa.failing.Store(false)
		if _, _, err := g.Propose(ctx, acme, agent, writeReq("req"), gate.Meta{}); err != nil {
			t.Fatal(err)
		}
		if ks := kinds(t, n.log, acme); !slices.Contains(ks, approval.KindRequested) {
			t.Fatalf("after the retry the chain %v has no %s", ks, approval.KindRequested)
		}
	})
	t.Run("consumption", func(t *testing.T) {
		ex := &recorder{runs: map[string]int{}}
		n := openNode(t, t.TempDir(), ex)
		ctx := context.Background()
		fa := &failingAudit{Log: n.log, kind: approval.KindExecuted}
		g := gateWith(t, n, ex, "", func(c *gate.Config) { c.Approvals = approval.NewStore(n.st.Approvals, fa, nil, nil) })
		v, _, err := g.Propose(ctx, acme, agent, writeReq("cons"), gate.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{}); err != nil {
			t.Fatal(err)
		}
		fa.failing.Store(true)
		_, err = g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
		honest(t, err, "will read in doubt")
		fa.failing.Store(false)
		_, err = g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
		if err == nil || ex.count(v.Intent.ID) != 0 {
			t.Fatalf("the retry after an unrecorded consumption: %v (runs %d), want refused, no run", err, ex.count(v.Intent.ID))
		}
	})
}
