package gate_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// recorder is a test executor: it counts runs per intent and checks that
// it only ever sees valid permits.
type recorder struct {
	mu      sync.Mutex
	runs    map[string]int
	invalid int
	fail    bool
	block   chan struct{} // if set, Run waits on it
}

func (r *recorder) Lookup(string) (gate.Executor, bool) { return r, true }

func (r *recorder) Run(ctx context.Context, p *gate.Permit) (map[string]string, error) {
	r.mu.Lock()
	if !p.Valid() {
		r.invalid++
		r.mu.Unlock()
		return nil, errors.New("invalid permit")
	}
	r.runs[p.Intent().ID]++
	r.mu.Unlock()
	if r.block != nil {
		<-r.block
	}
	if r.fail {
		return nil, errors.New("boom")
	}
	return map[string]string{"ok": "yes", "tenant": p.Tenant().String()}, nil
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

// switches is a SwitchReader whose state the test sets: the real one
// (internal/killswitch) is tested on a real store there and end to end.
type switches struct {
	mu             sync.Mutex
	global, tenant bool // engaged
	stale          bool
}

func (s *switches) Read(t tenant.ID) (killswitch.Reading, killswitch.Reading) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return killswitch.Reading{Scope: "global", Engaged: s.global, Revision: 1, Actor: "admin", Reason: "test", Fresh: !s.stale},
		killswitch.Reading{Scope: t.String(), Engaged: s.tenant, Revision: 2, Actor: "op", Reason: "test", Fresh: !s.stale}
}

func (s *switches) set(global, tenant, stale bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.global, s.tenant, s.stale = global, tenant, stale
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

type node struct {
	st   *natsstore.Store
	log  *audit.Log
	gate *gate.Gate
	sw   *switches
}

func openNode(tb testing.TB, dir string, ex gate.Executors) *node {
	tb.Helper()
	return openNodeWith(tb, dir, ex, nil)
}

// openNodeWith opens a node whose gate knows the action types of actions
// (nil: the built-ins).
func openNodeWith(tb testing.TB, dir string, ex gate.Executors, actions *action.Registry) *node {
	tb.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	sw := &switches{}
	g, err := gate.New(gate.Config{Intents: st.Intents, Idempotency: st.Idempotency, Audit: log, Actions: actions, Executors: ex, Switches: sw,
		Approvals: approval.NewStore(st.Approvals, log, nil, nil), Work: st.Work, Now: c.Now, Node: "test", Allowlist: []string{"127.0.0.1:1"}})
	if err != nil {
		tb.Fatal(err)
	}
	return &node{st, log, g, sw}
}

// operator approves intents in tests (never the proposer).
var operator = &auth.Principal{ID: "key_op", Name: "op", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}}

func approve(tb testing.TB, n *node, id string) {
	tb.Helper()
	if _, err := n.gate.DecideApproval(context.Background(), acme, operator, id, contract.ApprovalDecision{Decision: "approve", Reason: "looks right"}, gate.Meta{}); err != nil {
		tb.Fatalf("approve %s: %v", id, err)
	}
}

var (
	acme  = tenant.MustParse("acme")
	agent = &auth.Principal{ID: "key_agent", Name: "agent", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"*"}}
)

func writeReq(key string) contract.IntentRequest {
	return contract.IntentRequest{Action: "fs.write", Target: "notes/a.txt", Params: map[string]string{"content": "hi"}, IdempotencyKey: key}
}

func kinds(tb testing.TB, l *audit.Log, t tenant.ID) []string {
	tb.Helper()
	var out []string
	if err := l.Scan(context.Background(), t, 0, 0, func(_ []byte, r contract.AuditRecord) error {
		out = append(out, r.Kind)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return out
}

func replayPasses(tb testing.TB, l *audit.Log, t tenant.ID) contract.ReplayReport {
	tb.Helper()
	rp := replay.New(t.String())
	if err := l.Scan(context.Background(), t, 0, 0, func(raw []byte, _ contract.AuditRecord) error { rp.Add(raw); return nil }); err != nil {
		tb.Fatal(err)
	}
	rep := rp.Report()
	if !rep.Pass {
		tb.Fatalf("replay failed: %+v", rep.Mismatches)
	}
	return rep
}

func TestProposeIsIdempotentAndAudited(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	v, created, err := n.gate.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{RequestID: "r1"})
	if err != nil || !created {
		t.Fatalf("Propose = %v, created=%t", err, created)
	}
	if v.Preview == nil || v.Preview.Verdict != contract.Deny || v.Preview.Reasons[0] != gate.ReasonApprovalRequired || v.State != gate.StateProposed {
		t.Fatalf("preview = %+v state %s", v.Preview, v.State)
	}
	if h, _ := v.Intent.ComputeHash(); h != v.Intent.Hash {
		t.Fatal("intent hash does not bind its content")
	}
	again, created, err := n.gate.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil || created || again.Intent.ID != v.Intent.ID || again.Intent.Hash != v.Intent.Hash {
		t.Fatalf("repeat Propose = %v created=%t id %s", err, created, again.Intent.ID)
	}
	other := writeReq("k1")
	other.Target = "notes/b.txt"
	if _, _, err := n.gate.Propose(ctx, acme, agent, other, gate.Meta{}); contract.ErrorCode(err) != contract.CodeConflict {
		t.Fatalf("same key, different intent: %v, want conflict", err)
	}
	bad := writeReq("k2")
	bad.Action = "shell.exec"
	if _, _, err := n.gate.Propose(ctx, acme, agent, bad, gate.Meta{}); contract.ErrorCode(err) != contract.CodeUnknownAction {
		t.Fatalf("unknown action: %v", err)
	}
	if got := kinds(t, n.log, acme); len(got) != 2 || got[0] != audit.KindIntentProposed || got[1] != approval.KindRequested {
		t.Fatalf("audit kinds = %v", got)
	}
	replayPasses(t, n.log, acme)
}

func TestExecuteOnceAcrossRepeatsAndRestart(t *testing.T) {
	dir := t.TempDir()
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, dir, ex)
	ctx := context.Background()
	v, _, err := n.gate.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	approve(t, n, v.Intent.ID)
	out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{RequestID: "r2"})
	if err != nil || out.Result.Status != contract.StatusSucceeded || out.Duplicate {
		t.Fatalf("Execute = %+v, %v", out, err)
	}
	if out.Result.Output["tenant"] != "acme" {
		t.Fatalf("executor saw tenant %q", out.Result.Output["tenant"])
	}
	dup, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	if err != nil || !dup.Duplicate || dup.Result.Output["ok"] != "yes" {
		t.Fatalf("repeat Execute = %+v, %v", dup, err)
	}
	if ex.count(v.Intent.ID) != 1 {
		t.Fatalf("executor ran %d times", ex.count(v.Intent.ID))
	}
	n.st.Close()

	n2 := openNode(t, dir, ex)
	got, err := n2.gate.Get(ctx, acme, v.Intent.ID)
	if err != nil || got.State != gate.StateSucceeded || got.Result == nil {
		t.Fatalf("Get after restart = %+v, %v", got, err)
	}
	dup, err = n2.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	if err != nil || !dup.Duplicate {
		t.Fatalf("Execute after restart = %+v, %v", dup, err)
	}
	if ex.count(v.Intent.ID) != 1 || ex.invalid != 0 {
		t.Fatalf("executor ran %d times (%d invalid permits)", ex.count(v.Intent.ID), ex.invalid)
	}
	want := []string{audit.KindIntentProposed, approval.KindRequested, approval.KindGranted, audit.KindGateAllowed, approval.KindExecuted,
		audit.KindExecutionStarted, audit.KindExecutionSucceeded,
		audit.KindGateAllowed, audit.KindExecutionDuplicate, audit.KindGateAllowed, audit.KindExecutionDuplicate}
	if got := kinds(t, n2.log, acme); len(got) != len(want) {
		t.Fatalf("audit kinds = %v, want %v", got, want)
	} else {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("audit kinds = %v, want %v", got, want)
			}
		}
	}
	replayPasses(t, n2.log, acme)
}

func TestBlockedDecisionsAreAuditedAndNeverRun(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	escape := writeReq("esc")
	escape.Target = "../../etc/passwd"
	v, _, err := n.gate.Propose(ctx, acme, agent, escape, gate.Meta{})
	if err != nil || v.Preview.Verdict != contract.Deny {
		t.Fatalf("Propose escape = %+v, %v", v.Preview, err)
	}
	_, err = n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	var ae *contract.Error
	if !errors.As(err, &ae) || ae.Code != contract.CodeBlocked || len(ae.Reasons) != 2 || ae.Reasons[0] != gate.ReasonPolicyDenied || ae.Reasons[1] != gate.ReasonApprovalRequired {
		t.Fatalf("Execute escape = %v", err)
	}
	// A principal of another tenant is refused by the gate itself too
	// (audited): it is not the proposer.
	stranger := &auth.Principal{ID: "key_x", Role: auth.RoleAgent, Tenants: []string{"other"}, Actions: []string{"*"}}
	ok, _, err := n.gate.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.gate.Execute(ctx, acme, stranger, ok.Intent.ID, gate.Meta{}); !errors.As(err, &ae) || ae.Code != contract.CodeForbidden || ae.Reasons[0] != gate.ReasonNotProposer {
		t.Fatalf("stranger Execute = %v", err)
	}
	// A principal without the class may not propose: forbidden and audited.
	reader := &auth.Principal{ID: "key_r", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{contract.A0}}
	if _, _, err := n.gate.Propose(ctx, acme, reader, writeReq("k9"), gate.Meta{}); contract.ErrorCode(err) != contract.CodeForbidden {
		t.Fatalf("reader Propose = %v", err)
	}
	if ex.count(v.Intent.ID)+ex.count(ok.Intent.ID) != 0 {
		t.Fatal("a blocked intent reached the executor")
	}
	got := kinds(t, n.log, acme)
	want := []string{audit.KindIntentProposed, approval.KindRequested, audit.KindGateBlocked, audit.KindIntentProposed, approval.KindRequested,
		gate.KindExecuteRefused, audit.KindAccessDenied}
	if len(got) != len(want) {
		t.Fatalf("kinds = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("kinds = %v, want %v", got, want)
		}
	}
	view, err := n.gate.Get(ctx, acme, v.Intent.ID)
	if err != nil || view.State != gate.StateBlocked || view.LastDecision == nil {
		t.Fatalf("Get blocked = %+v, %v", view, err)
	}
	replayPasses(t, n.log, acme)
}

// TestInterruptedExecutionIsInDoubt: a claim left "executing" by a process
// that died is reported in doubt and never re-run.
// TestInDoubtMeansInDoubtOnEveryNode is break 5 of issue 13: node B listed
// an execution node A was still running as in doubt (each node judged from
// its own in-memory set), and an operator's resolve on B succeeded while
// the effect was happening. Now a running execution holds a lease its node
// renews: executing on every node while it runs, resolve refused; in doubt
// everywhere once the lease lapses (here: the executor overran its
// deadline and ignores it, so A stops renewing).
func TestInDoubtMeansInDoubtOnEveryNode(t *testing.T) {
	ex := &recorder{runs: map[string]int{}, block: make(chan struct{})}
	t.Cleanup(func() { close(ex.block) })
	n := openNode(t, t.TempDir(), &recorder{runs: map[string]int{}})
	ctx := context.Background()
	// Both nodes on the wall clock (leases compare times across nodes).
	mk := func(name string, ex gate.Executors, timeout time.Duration) *gate.Gate {
		g, err := gate.New(gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: n.log, Executors: ex, Switches: &switches{},
			Approvals: approval.NewStore(n.st.Approvals, n.log, nil, nil), Node: name, Lease: 300 * time.Millisecond, ExecTimeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	a := mk("node-a", ex, 2*time.Second)
	other := &recorder{runs: map[string]int{}}
	b := mk("node-b", other, time.Minute)
	v, _, err := a.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "looks right"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
		done <- err
	}()
	waitFor(t, func() bool { return ex.count(v.Intent.ID) == 1 })
	// For several lease periods node B sees it running: never in doubt,
	// never resolvable, never re-run.
	for until := time.Now().Add(time.Second); time.Now().Before(until); time.Sleep(50 * time.Millisecond) {
		if view, err := b.Get(ctx, acme, v.Intent.ID); err != nil || view.State != gate.StateExecuting {
			t.Fatalf("node B while A runs: %+v, %v, want executing", view.State, err)
		}
		if list, err := b.ListInDoubt(ctx, acme); err != nil || len(list) != 0 {
			t.Fatalf("node B lists %v (%v) in doubt while A runs", list, err)
		}
		if _, err := b.Resolve(ctx, acme, operator, v.Intent.ID, gate.Resolution{Outcome: contract.StatusFailed, Reason: "looks stuck"}, gate.Meta{}); contract.ErrorCode(err) != contract.CodeConflict {
			t.Fatalf("resolve on node B while A runs = %v, want conflict", err)
		}
		if _, err := b.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); contract.ErrorCode(err) != contract.CodeConflict {
			t.Fatalf("execute on node B while A runs = %v, want conflict (in progress)", err)
		}
	}
	// A's executor overruns its deadline: A answers in doubt and stops
	// renewing; the lease lapses and every node reads in doubt.
	if err := <-done; contract.ErrorCode(err) != contract.CodeInDoubt {
		t.Fatalf("node A after the executor overran its deadline = %v, want in_doubt", err)
	}
	waitFor(t, func() bool {
		list, err := b.ListInDoubt(ctx, acme)
		return err == nil && len(list) == 1
	})
	for _, g := range []*gate.Gate{a, b} {
		if view, err := g.Get(ctx, acme, v.Intent.ID); err != nil || view.State != gate.StateInDoubt {
			t.Fatalf("after the lease lapsed: %+v, %v, want in_doubt on every node", view.State, err)
		}
	}
	if _, err := b.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); contract.ErrorCode(err) != contract.CodeInDoubt {
		t.Fatalf("Execute on node B = %v, want in_doubt", err)
	}
	if res, err := b.Resolve(ctx, acme, operator, v.Intent.ID, gate.Resolution{Outcome: contract.StatusFailed, Reason: "the target shows nothing"}, gate.Meta{}); err != nil || res.Status != contract.StatusFailed {
		t.Fatalf("resolve after the lapse = %+v, %v", res, err)
	}
	if other.count(v.Intent.ID) != 0 || ex.count(v.Intent.ID) != 1 {
		t.Fatal("an in-doubt execution was re-run")
	}
}

func TestExecuteFailsClosedWhenStoreIsGone(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	v, _, err := n.gate.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	n.st.Close()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := n.gate.Execute(cctx, acme, agent, v.Intent.ID, gate.Meta{}); contract.ErrorCode(err) != contract.CodeStoreUnavailable {
		t.Fatalf("Execute with closed store = %v, want store_unavailable", err)
	}
	if ex.count(v.Intent.ID) != 0 {
		t.Fatal("executor ran without a durable decision")
	}
}

func TestMissingTenantOrPrincipalFailsClosed(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	if _, _, err := n.gate.Propose(ctx, tenant.ID{}, agent, writeReq("k"), gate.Meta{}); contract.ErrorCode(err) != contract.CodeInvalidTenant {
		t.Fatalf("Propose without tenant = %v", err)
	}
	if _, err := n.gate.Execute(ctx, tenant.ID{}, agent, "in_x", gate.Meta{}); contract.ErrorCode(err) != contract.CodeInvalidTenant {
		t.Fatalf("Execute without tenant = %v", err)
	}
	if _, _, err := n.gate.Propose(ctx, acme, nil, writeReq("k"), gate.Meta{}); contract.ErrorCode(err) != contract.CodeUnauthenticated {
		t.Fatalf("Propose without principal = %v", err)
	}
	if _, err := n.gate.Execute(ctx, acme, &auth.Principal{}, "in_x", gate.Meta{}); contract.ErrorCode(err) != contract.CodeUnauthenticated {
		t.Fatalf("Execute without principal = %v", err)
	}
	if _, err := n.gate.Get(ctx, acme, "in_missing"); contract.ErrorCode(err) != contract.CodeNotFound {
		t.Fatalf("Get missing = %v", err)
	}
	if _, err := n.gate.Get(ctx, acme, "../x"); contract.ErrorCode(err) != contract.CodeNotFound {
		t.Fatalf("Get bad id = %v", err)
	}
}

func TestZeroPermitIsInvalid(t *testing.T) {
	var p *gate.Permit
	if p.Valid() || (&gate.Permit{}).Valid() {
		t.Fatal("a permit not minted by the gate is valid")
	}
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKillSwitchBlocksExecute: engaged (global or tenant) or stale switches
// block every execution, and the block is audited with the switch named;
// proposals are still accepted. Disengaging lets the same intent run.
func TestKillSwitchBlocksExecute(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	tests := []struct {
		name                  string
		global, tenant, stale bool
		reason                string
	}{
		{"global engaged", true, false, false, gate.ReasonGlobalEngaged},
		{"tenant engaged", false, true, false, gate.ReasonTenantEngaged},
		{"both engaged", true, true, false, gate.ReasonGlobalEngaged},
		{"stale copy", false, false, true, gate.ReasonSwitchStale},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n.sw.set(tt.global, tt.tenant, tt.stale)
			read := contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: "ks-" + string(rune('a'+i))}
			v, created, err := n.gate.Propose(ctx, acme, agent, read, gate.Meta{})
			if err != nil || !created {
				t.Fatalf("proposal refused while engaged: %v", err)
			}
			if v.Preview.Verdict != contract.Deny || v.Preview.Reasons[0] != tt.reason {
				t.Fatalf("preview = %s %v", v.Preview.Verdict, v.Preview.Reasons)
			}
			_, err = n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
			var ae *contract.Error
			if !errors.As(err, &ae) || ae.Code != contract.CodeBlocked || ae.Reasons[0] != tt.reason {
				t.Fatalf("Execute = %v, want blocked %s", err, tt.reason)
			}
			if ex.count(v.Intent.ID) != 0 {
				t.Fatal("executor ran while the switch blocked")
			}
			var last contract.AuditRecord
			_ = n.log.Scan(ctx, acme, 0, 0, func(_ []byte, r contract.AuditRecord) error { last = r; return nil })
			if last.Kind != audit.KindGateBlocked || !strings.Contains(string(last.Payload), tt.reason) || !strings.Contains(string(last.Payload), `"revision":`) {
				t.Fatalf("last record = %s %s", last.Kind, last.Payload)
			}
			n.sw.set(false, false, false)
			if out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil || out.Result.Status != contract.StatusSucceeded {
				t.Fatalf("after disengage: %+v, %v", out, err)
			}
		})
	}
	replayPasses(t, n.log, acme)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// TestLastDecisionFollowsTheExecution: a blocking decision is recorded on
// the intent; the allowing decision an execution ran under travels in its
// idempotency claim, and GET shows it as the last decision.
func TestLastDecisionFollowsTheExecution(t *testing.T) {
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ctx := context.Background()
	v, _, err := n.gate.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); contract.ErrorCode(err) != contract.CodeBlocked {
		t.Fatalf("Execute before approval = %v, want blocked", err)
	}
	view, err := n.gate.Get(ctx, acme, v.Intent.ID)
	if err != nil || view.State != gate.StateBlocked || view.LastDecision == nil || view.LastDecision.Verdict != contract.Deny {
		t.Fatalf("Get after the block = %+v, %v", view, err)
	}
	approve(t, n, v.Intent.ID)
	out, err := n.gate.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	view, err = n.gate.Get(ctx, acme, v.Intent.ID)
	if err != nil || view.State != gate.StateSucceeded || view.LastDecision == nil || view.LastDecision.Verdict != contract.Allow ||
		view.LastDecision.Checks[len(view.LastDecision.Checks)-1] != out.Decision.Checks[len(out.Decision.Checks)-1] {
		t.Fatalf("Get after the execution = %+v, %v; decision %+v", view, err, out.Decision)
	}
}
