package gate_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// retentionGate is a gate over n's store with a one-second retention, its
// approvals expiring with it.
func retentionGate(tb testing.TB, n *node, ex gate.Executors, sw gate.SwitchReader, name string, opts ...func(*gate.Config)) *gate.Gate {
	tb.Helper()
	approvals := approval.NewStore(n.st.Approvals, n.log, nil, nil)
	approvals.SetRetention(time.Second)
	cfg := gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: n.log, Executors: ex, Switches: sw,
		Approvals: approvals, Work: n.st.Work, Node: name, Retention: time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	g, err := gate.New(cfg)
	if err != nil {
		tb.Error(err) // may run off the test goroutine
		return nil
	}
	return g
}

// lastMsg is the stored last message of key in bucket, nil when none.
func lastMsg(tb testing.TB, n *node, bucket, key string) *jetstream.RawStreamMsg {
	tb.Helper()
	s, err := n.st.JS.Stream(context.Background(), tenant.KVStream(bucket))
	if err != nil {
		tb.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), tenant.KVSubject(bucket, key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// subjects is how many keys bucket holds: the per-subject state the server
// keeps in memory, which a retention must bound.
func subjects(tb testing.TB, n *node, bucket string) uint64 {
	tb.Helper()
	s, err := n.st.JS.Stream(context.Background(), tenant.KVStream(bucket))
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.NumSubjects
}

// TestRetentionBoundsTheStore: under a retention every intent and approval
// expires after its last write, and a finished execution's claim after its
// intent, so the intent is never executed again; a blocked repeat does not
// revive a finished intent; claims in doubt stay and can be resolved after
// their intent expired, and then expire too. The audit log keeps every
// record and replays.
func TestRetentionBoundsTheStore(t *testing.T) {
	ctx := context.Background()
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	sw := &switches{}
	g := retentionGate(t, n, ex, sw, "retain")
	propose := func(key string, approved bool) string {
		t.Helper()
		v, _, err := g.Propose(ctx, acme, agent, writeReq(key), gate.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		if approved {
			if _, err := g.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "looks right"}, gate.Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		return v.Intent.ID
	}
	ttl := func(bucket, key string) string {
		t.Helper()
		m := lastMsg(t, n, bucket, key)
		if m == nil {
			return "gone"
		}
		return m.Header.Get(jetstream.MsgTTLHeader)
	}

	// A finishes: intent and approval expire after 1s, the claim after 2s.
	a := propose("ka", true)
	if out, err := g.Execute(ctx, acme, agent, a, gate.Meta{}); err != nil || out.Result.Status != contract.StatusSucceeded {
		t.Fatalf("Execute A = %+v, %v", out, err)
	}
	if got := [3]string{ttl(tenant.IntentsBucket, tenant.IntentKey(acme, a)), ttl(tenant.ApprovalsBucket, tenant.ApprovalKey(acme, a)),
		ttl(tenant.IdempotencyBucket, tenant.IdempotencyKey(acme, "ka"))}; got != [3]string{"1s", "1s", "2s"} {
		t.Fatalf("TTLs of A's intent, approval, claim = %v, want 1s 1s 2s", got)
	}
	// A blocked repeat of a finished intent must not rewrite it.
	final := lastMsg(t, n, tenant.IntentsBucket, tenant.IntentKey(acme, a)).Sequence
	sw.set(false, true, false)
	if _, err := g.Execute(ctx, acme, agent, a, gate.Meta{}); contract.ErrorCode(err) != contract.CodeBlocked {
		t.Fatalf("blocked repeat = %v", err)
	}
	if m := lastMsg(t, n, tenant.IntentsBucket, tenant.IntentKey(acme, a)); m == nil || m.Sequence != final {
		t.Fatal("a blocked repeat rewrote a final intent")
	}
	// C is never executed; E is blocked once, and its rewrite keeps a TTL.
	c := propose("kc", false)
	e := propose("ke", true)
	if _, err := g.Execute(ctx, acme, agent, e, gate.Meta{}); contract.ErrorCode(err) != contract.CodeBlocked {
		t.Fatalf("Execute E = %v, want blocked", err)
	}
	sw.set(false, false, false)
	if m := lastMsg(t, n, tenant.IntentsBucket, tenant.IntentKey(acme, e)); m == nil || m.Header.Get(jetstream.MsgTTLHeader) != "1s" ||
		!strings.Contains(string(m.Data), `"last_decision"`) {
		t.Fatalf("E after its blocked decision: want its decision saved with TTL 1s, got record %v", m != nil && strings.Contains(string(m.Data), `"last_decision"`))
	}

	// B and D are in doubt: claimed on another gate whose executor never
	// returns; past its deadline the gate stops renewing the lease, which
	// lapses; their intents expire meanwhile.
	slow := &recorder{runs: map[string]int{}, block: make(chan struct{})}
	t.Cleanup(func() { close(slow.block) })
	var inDoubt []string
	for _, key := range []string{"kb", "kd"} {
		id := propose(key, true)
		inDoubt = append(inDoubt, id)
		go func() {
			if sg := retentionGate(t, n, slow, &switches{}, "slow", func(c *gate.Config) { c.Lease, c.ExecTimeout = 300*time.Millisecond, 50*time.Millisecond }); sg != nil {
				_, _ = sg.Execute(ctx, acme, agent, id, gate.Meta{})
			}
		}()
		waitFor(t, func() bool { return slow.count(id) == 1 })
	}
	if got := ttl(tenant.IdempotencyBucket, tenant.IdempotencyKey(acme, "kb")); got != "" {
		t.Fatalf("a running claim carries TTL %q", got)
	}

	// A's intent goes first; an execute of it then finds nothing to run.
	waitFor(t, func() bool { return ttl(tenant.IntentsBucket, tenant.IntentKey(acme, a)) == "gone" })
	if _, err := g.Execute(ctx, acme, agent, a, gate.Meta{}); contract.ErrorCode(err) != contract.CodeNotFound || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Execute A after expiry = %v, want not_found naming the retention", err)
	}
	// Every intent and approval expires; only the claims in doubt stay.
	waitFor(t, func() bool {
		return subjects(t, n, tenant.IntentsBucket) == 0 && subjects(t, n, tenant.ApprovalsBucket) == 0 &&
			subjects(t, n, tenant.IdempotencyBucket) == 2
	})
	if ex.count(a) != 1 || ex.count(c)+ex.count(e) != 0 {
		t.Fatalf("runs: A %d, C %d, E %d", ex.count(a), ex.count(c), ex.count(e))
	}
	var list []gate.InDoubt
	var err error
	waitFor(t, func() bool {
		list, err = g.ListInDoubt(ctx, acme)
		return err != nil || len(list) == 2
	})
	if err != nil || len(list) != 2 || list[0].IntentID != inDoubt[0] || list[1].IntentID != inDoubt[1] {
		t.Fatalf("in doubt = %+v, %v", list, err)
	}
	for _, id := range inDoubt {
		if res, err := g.Resolve(ctx, acme, operator, id, gate.Resolution{Outcome: contract.StatusSucceeded, Reason: "checked the target"}, gate.Meta{}); err != nil || res.Status != contract.StatusSucceeded {
			t.Fatalf("Resolve %s = %+v, %v", id, res, err)
		}
	}
	waitFor(t, func() bool { return subjects(t, n, tenant.IdempotencyBucket) == 0 })
	for _, id := range inDoubt {
		if slow.count(id) != 1 {
			t.Fatal("an in-doubt execution was re-run")
		}
	}
	want := map[string]int{audit.KindIntentProposed: 5, audit.KindExecutionStarted: 3, audit.KindExecutionSucceeded: 1,
		gate.KindExecutionResolved: 2, audit.KindGateBlocked: 2}
	got := map[string]int{}
	for _, k := range kinds(t, n.log, acme) {
		got[k]++
	}
	for k, c := range want {
		if got[k] != c {
			t.Fatalf("audit has %d %s, want %d (all: %v)", got[k], k, c, got)
		}
	}
	replayPasses(t, n.log, acme)
}

func TestRetentionConfig(t *testing.T) {
	n := openNode(t, t.TempDir(), &recorder{runs: map[string]int{}})
	base := gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: n.log, Executors: &recorder{}, Switches: &switches{},
		Approvals: approval.NewStore(n.st.Approvals, n.log, nil, nil)}
	for _, tt := range []struct {
		name      string
		retention time.Duration
		work      bool
		ok        bool
	}{
		{"none", 0, false, true},
		{"a second", time.Second, true, true},
		{"under a second", 500 * time.Millisecond, true, false},
		{"without a work queue (it is only for execute_when_approved)", time.Minute, false, true},
	} {
		cfg := base
		cfg.Retention = tt.retention
		if tt.work {
			cfg.Work = n.st.Work
		}
		if _, err := gate.New(cfg); (err == nil) != tt.ok {
			t.Errorf("%s: New = %v, want ok=%t", tt.name, err, tt.ok)
		}
	}
}

// countingApprovals counts approval requests.
type countingApprovals struct {
	gate.Approvals
	requests int
}

func (c *countingApprovals) Request(ctx context.Context, t tenant.ID, in contract.ActionIntent, actor *auth.Principal, requestID string, now time.Time) error {
	c.requests++
	return c.Approvals.Request(ctx, t, in, actor, requestID, now)
}

// TestRepeatedProposalAfterExecutionOpensNoApproval: a repeated proposal
// re-opens a missing approval request only while nothing has run; once
// execution started (its approval consumed, and under a retention perhaps
// expired before the intent) there is nothing left to approve.
func TestRepeatedProposalAfterExecutionOpensNoApproval(t *testing.T) {
	ctx := context.Background()
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	ca := &countingApprovals{Approvals: approval.NewStore(n.st.Approvals, n.log, nil, nil)}
	g, err := gate.New(gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: n.log, Executors: ex, Switches: &switches{},
		Approvals: ca, Work: n.st.Work, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := g.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{}); err != nil || ca.requests != 2 {
		t.Fatalf("repeat before execution: %v, %d requests, want 2 (re-opened if missing)", err, ca.requests)
	}
	if _, err := g.DecideApproval(ctx, acme, operator, v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Execute(ctx, acme, agent, v.Intent.ID, gate.Meta{}); err != nil {
		t.Fatal(err)
	}
	if again, _, err := g.Propose(ctx, acme, agent, writeReq("k1"), gate.Meta{}); err != nil || ca.requests != 2 || again.State != gate.StateSucceeded {
		t.Fatalf("repeat after execution: %v, state %s, %d requests, want 2", err, again.State, ca.requests)
	}
}
