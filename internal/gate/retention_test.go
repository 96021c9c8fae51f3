package gate_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// retentionGate is a gate over n's store with a one-second retention.
func retentionGate(tb testing.TB, n *node, ex gate.Executors, sw gate.SwitchReader, name string) *gate.Gate {
	tb.Helper()
	g, err := gate.New(gate.Config{Intents: n.st.Intents, Idempotency: n.st.Idempotency, Audit: n.log, Executors: ex, Switches: sw,
		Approvals: approval.NewStore(n.st.Approvals, n.log, nil, nil), JS: n.st.JS, Node: name, Retention: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// lastMsg is the stored last message of key in bucket, nil when none.
func lastMsg(tb testing.TB, n *node, bucket, key string) *jetstream.RawStreamMsg {
	tb.Helper()
	s, err := n.st.JS.Stream(context.Background(), "KV_"+bucket)
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
	s, err := n.st.JS.Stream(context.Background(), "KV_"+bucket)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.NumSubjects
}

// TestRetentionExpiresFinishedExecutionsOnly: under a retention a finished
// execution's intent expires first and its claim after it, so the intent is
// never executed again; a blocked repeat does not revive the record;
// executions in doubt and intents never executed stay, and an in-doubt
// execution whose intent expired can still be resolved. The audit log
// keeps every record and replays.
func TestRetentionExpiresFinishedExecutionsOnly(t *testing.T) {
	ctx := context.Background()
	ex := &recorder{runs: map[string]int{}}
	n := openNode(t, t.TempDir(), ex)
	sw := &switches{}
	g := retentionGate(t, n, ex, sw, "retain")
	propose := func(key string) string {
		t.Helper()
		v, _, err := g.Propose(ctx, acme, agent, writeReq(key), gate.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		approve(t, n, v.Intent.ID)
		return v.Intent.ID
	}

	// A finishes: both records carry their TTLs, earlier revisions rolled up.
	a := propose("ka")
	if out, err := g.Execute(ctx, acme, agent, a, gate.Meta{}); err != nil || out.Result.Status != contract.StatusSucceeded {
		t.Fatalf("Execute A = %+v, %v", out, err)
	}
	im := lastMsg(t, n, tenant.IntentsBucket, tenant.IntentKey(acme, a))
	cm := lastMsg(t, n, tenant.IdempotencyBucket, tenant.IdempotencyKey(acme, "ka"))
	if im == nil || cm == nil || im.Header.Get(jetstream.MsgTTLHeader) != "1s" || cm.Header.Get(jetstream.MsgTTLHeader) != "2s" {
		t.Fatalf("TTLs: intent %v, claim %v; want 1s and 2s", im, cm)
	}
	// A blocked repeat of a finished intent must not rewrite it without TTL.
	sw.set(false, true, false)
	if _, err := g.Execute(ctx, acme, agent, a, gate.Meta{}); contract.ErrorCode(err) != contract.CodeBlocked {
		t.Fatalf("blocked repeat = %v", err)
	}
	sw.set(false, false, false)
	if m := lastMsg(t, n, tenant.IntentsBucket, tenant.IntentKey(acme, a)); m == nil || m.Sequence != im.Sequence {
		t.Fatal("a blocked repeat rewrote a final intent")
	}

	// B is in doubt: claimed and running on another gate, which never finishes.
	slow := &recorder{runs: map[string]int{}, block: make(chan struct{})}
	b := propose("kb")
	go func() {
		_, _ = retentionGate(t, n, slow, &switches{}, "slow").Execute(ctx, acme, agent, b, gate.Meta{})
	}()
	waitFor(t, func() bool { return slow.count(b) == 1 })
	t.Cleanup(func() { close(slow.block) })

	// C is proposed and never executed.
	propose("kc")

	// D is in doubt and its intent expired meanwhile (a cut between the
	// two final writes): its intent is rewritten with a TTL by hand.
	d := propose("kd")
	go func() {
		_, _ = retentionGate(t, n, slow, &switches{}, "slow").Execute(ctx, acme, agent, d, gate.Meta{})
	}()
	waitFor(t, func() bool { return slow.count(d) == 1 })
	e, err := n.st.Intents.Get(ctx, tenant.IntentKey(acme, d))
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: tenant.KVSubject(tenant.IntentsBucket, tenant.IntentKey(acme, d)), Header: nats.Header{}, Data: e.Value()}
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	if _, err := n.st.JS.PublishMsg(ctx, m, jetstream.WithMsgTTL(time.Second)); err != nil {
		t.Fatal(err)
	}

	// The intents go first; an execute of A then finds nothing to run.
	waitFor(t, func() bool { return lastMsg(t, n, tenant.IntentsBucket, tenant.IntentKey(acme, a)) == nil })
	if _, err := g.Execute(ctx, acme, agent, a, gate.Meta{}); contract.ErrorCode(err) != contract.CodeNotFound {
		t.Fatalf("Execute A after expiry = %v, want not_found", err)
	}
	waitFor(t, func() bool {
		return lastMsg(t, n, tenant.IdempotencyBucket, tenant.IdempotencyKey(acme, "ka")) == nil &&
			lastMsg(t, n, tenant.IntentsBucket, tenant.IntentKey(acme, d)) == nil
	})
	if ex.count(a) != 1 {
		t.Fatalf("A ran %d times", ex.count(a))
	}
	// Left: B's, C's intents; B's and D's claims (in doubt, no TTL).
	if got, want := [2]uint64{subjects(t, n, tenant.IntentsBucket), subjects(t, n, tenant.IdempotencyBucket)}, [2]uint64{2, 2}; got != want {
		t.Fatalf("keys left (intents, claims) = %v, want %v", got, want)
	}
	list, err := g.ListInDoubt(ctx, acme)
	if err != nil || len(list) != 2 || list[0].IntentID != b || list[1].IntentID != d {
		t.Fatalf("in doubt = %+v, %v", list, err)
	}
	for _, id := range []string{b, d} {
		if res, err := g.Resolve(ctx, acme, operator, id, contract.StatusSucceeded, "checked the target", gate.Meta{}); err != nil || res.Status != contract.StatusSucceeded {
			t.Fatalf("Resolve %s = %+v, %v", id, res, err)
		}
	}
	// Resolved, they expire too; only C, never executed, stays.
	waitFor(t, func() bool {
		return subjects(t, n, tenant.IntentsBucket) == 1 && subjects(t, n, tenant.IdempotencyBucket) == 0
	})
	if slow.count(b) != 1 || slow.count(d) != 1 {
		t.Fatal("an in-doubt execution was re-run")
	}
	want := map[string]int{audit.KindExecutionStarted: 3, audit.KindExecutionSucceeded: 1, gate.KindExecutionResolved: 2}
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
		js        bool
		ok        bool
	}{
		{"none", 0, false, true},
		{"a second", time.Second, true, true},
		{"under a second", 500 * time.Millisecond, true, false},
		{"without JetStream", time.Minute, false, false},
	} {
		cfg := base
		cfg.Retention = tt.retention
		if tt.js {
			cfg.JS = n.st.JS
		}
		if _, err := gate.New(cfg); (err == nil) != tt.ok {
			t.Errorf("%s: New = %v, want ok=%t", tt.name, err, tt.ok)
		}
	}
}
