package main_test

// The breaks of issue 13, end to end through the built binary: each was
// found by trying the product as an adversary would, and each test failed
// on the main it was found on.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// mkKey creates a key with the CLI on a stopped server's data dir.
func mkKey(t *testing.T, dataDir, name, role, actions string, extra ...string) string {
	t.Helper()
	args := append([]string{"keys", "create", "--data-dir", dataDir, "--name", name, "--role", role, "--actions", actions}, extra...)
	key := strings.TrimSpace(run(t, args...))
	if !strings.HasPrefix(key, "exo_") {
		t.Fatalf("keys create printed %q", key)
	}
	return key
}

// TestBreakForeignAdminTakeover (break 1): an admin granted only beta
// minted keys for acme, read acme's audit, revoked acme's keys and, with
// two self-minted operator keys, approved and ran an A3 fs.delete in acme.
func TestBreakForeignAdminTakeover(t *testing.T) {
	dataDir := t.TempDir()
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system")
	betaAdmin := mkKey(t, dataDir, "beta-admin", "admin", "*", "--tenant", "beta")
	acmeBot := mkKey(t, dataDir, "acme-bot", "agent", "*", "--tenant", "acme")
	addr := freePort(t)
	srv := startServer(t, dataDir, addr)
	ctx, beta := t.Context(), srv.client(betaAdmin)

	// Minting operators for acme: not found (acme does not exist for beta).
	for _, name := range []string{"op1", "op2"} {
		_, err := beta.CreateKey(ctx, client.KeyRequest{Name: name, Role: "operator", Tenants: []string{"acme"}, Actions: []string{"*"}})
		if e := refusal(err); e.Status != 404 || e.Code != "not_found" {
			t.Fatalf("beta admin minting an acme operator: %v, want 404 not_found", err)
		}
	}
	// Nor a key beyond its own powers in beta.
	if _, err := beta.CreateKey(ctx, client.KeyRequest{Name: "x", Role: "admin", Tenants: []string{"beta", "system"}, Actions: []string{"*"}}); refusal(err).Status != 403 || refusal(err).Code != "forbidden" {
		t.Fatalf("beta admin minting a system key: %v, want 403 forbidden", err)
	}
	// Reading acme's audit, listing acme's keys, revoking acme's keys.
	if _, err := beta.AuditPage(ctx, "acme", 0, 0); refusal(err).Status != 404 || refusal(err).Code != "not_found" {
		t.Fatalf("beta admin reading acme's audit: %v, want 404 not_found", err)
	}
	keys, err := beta.ListKeys(ctx)
	if err != nil || strings.Contains(mustJSONString(keys), "acme") || strings.Contains(mustJSONString(keys), "root") {
		t.Fatalf("beta admin's key list shows another tenant's keys: %v %+v", err, keys)
	}
	keys, err = srv.client(root).ListKeys(ctx)
	var acmeBotID string
	for _, p := range keys {
		if p.Name == "acme-bot" {
			acmeBotID = p.ID
		}
	}
	if err != nil || len(keys) != 3 || acmeBotID == "" {
		t.Fatalf("the system admin lists every key: %v, %d keys", err, len(keys))
	}
	if _, err := beta.RevokeKey(ctx, acmeBotID); refusal(err).Status != 404 || refusal(err).Code != "not_found" {
		t.Fatalf("beta admin revoking acme's key: %v, want 404 not_found", err)
	}
	if _, err := srv.client(acmeBot).AuditPage(ctx, "acme", 0, 1); err != nil {
		t.Fatalf("acme's key stopped working: %v", err)
	}
	// The global switch is a global power: not beta's admin's.
	if _, _, err := beta.SetKillSwitch(ctx, "", contract.KillSwitchRequest{Engaged: false, Reason: "takeover"}); refusal(err).Status != 403 || refusal(err).Code != "forbidden" {
		t.Fatalf("beta admin flipping the global switch: %v, want 403 forbidden", err)
	}
	if _, confirmed, err := srv.client(root).SetKillSwitch(ctx, "", contract.KillSwitchRequest{Engaged: false, Reason: "go live"}); err != nil || !confirmed {
		// confirmed is HTTP 200 (202: the node did not confirm applying it).
		t.Fatalf("the system admin flipping the global switch: confirmed %v, %v", confirmed, err)
	}
}

// TestBreakFourEyesOnePerson (break 2): an operator whose key grants only
// A0 cast a vote that counted toward an A3 approval, and two keys of one
// person counted as two approvers.
func TestBreakFourEyesOnePerson(t *testing.T) {
	dataDir := t.TempDir()
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	bot := mkKey(t, dataDir, "bot", "agent", "*", "--tenant", "acme")
	reader := mkKey(t, dataDir, "reader-op", "operator", "A0", "--tenant", "acme")
	alice1 := mkKey(t, dataDir, "alice-laptop", "operator", "*", "--tenant", "acme", "--owner", "alice")
	alice2 := mkKey(t, dataDir, "alice-phone", "operator", "A3", "--tenant", "acme", "--owner", "alice")
	bob := mkKey(t, dataDir, "bob", "operator", "fs.delete", "--tenant", "acme")
	addr := freePort(t)
	srv := startServer(t, dataDir, addr)
	goLive(t, addr, root)
	ctx, agent := t.Context(), srv.client(bot)

	v, created, err := agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.delete", Target: "victim.txt", IdempotencyKey: "del-1"})
	if err != nil || !created {
		t.Fatalf("propose: created %v, %v", created, err)
	}
	id := v.Intent.ID
	vote := func(key string) error {
		_, err := srv.client(key).DecideApproval(ctx, "acme", id, contract.ApprovalDecision{Decision: "approve", Reason: "e2e"})
		return err
	}
	if err := vote(reader); refusal(err).Status != 403 || refusal(err).Code != "forbidden" {
		t.Fatalf("an A0 operator's vote on an A3 delete: %v, want 403 forbidden", err)
	}
	if err := vote(alice1); err != nil {
		t.Fatalf("alice's vote: %v", err)
	}
	if err := vote(alice2); refusal(err).Status != 409 || refusal(err).Code != "conflict" {
		t.Fatalf("alice's second key: %v, want 409 conflict", err)
	}
	if _, err := agent.Execute(ctx, "acme", id); !blockedFor(err, "approval_required") {
		t.Fatalf("execute with one person's approval: %v, want 403 blocked approval_required", err)
	}
	// The queue shows who stands behind each vote.
	items, err := srv.client(alice1).ListApprovals(ctx, "acme", "")
	if err != nil || !slices.ContainsFunc(items, func(it client.ApprovalItem) bool {
		return slices.ContainsFunc(it.Lineage, func(l approval.Lineage) bool { return l.Owner == "owner:alice" })
	}) {
		t.Fatalf("approval queue without lineage: %v %+v", err, items)
	}
	if err := vote(bob); err != nil {
		t.Fatalf("bob's vote: %v", err)
	}
	if _, err := agent.Execute(ctx, "acme", id); err != nil {
		t.Fatalf("execute with two people's approval: %v", err)
	}
}

// TestBreakAnyoneRunsAnApprovedIntent (break 3): agent bot2 executed an
// intent proposed and approved for bot1, even after bot1's key was revoked.
func TestBreakAnyoneRunsAnApprovedIntent(t *testing.T) {
	dataDir := t.TempDir()
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	bot1 := mkKey(t, dataDir, "bot1", "agent", "*", "--tenant", "acme")
	bot2 := mkKey(t, dataDir, "bot2", "agent", "*", "--tenant", "acme")
	op := mkKey(t, dataDir, "op", "operator", "*", "--tenant", "acme")
	addr := freePort(t)
	srv := startServer(t, dataDir, addr, "--sandbox-dir", t.TempDir())
	goLive(t, addr, root)
	ctx, first, second, admin := t.Context(), srv.client(bot1), srv.client(bot2), srv.client(root)

	propose := func(idem string) string {
		t.Helper()
		v, created, err := first.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.write", Target: "a.txt", Params: map[string]string{"content": idem}, IdempotencyKey: idem})
		if err != nil || !created {
			t.Fatalf("propose: created %v, %v", created, err)
		}
		srv.approveVia(op, "acme", v.Intent.ID)
		return v.Intent.ID
	}
	id := propose("w-1")
	_, err := second.Execute(ctx, "acme", id)
	if e := refusal(err); e.Status != 403 || e.Code != "forbidden" || !slices.Contains(e.Reasons, "not_proposer") {
		t.Fatalf("bot2 executing bot1's approved intent: %v, want 403 forbidden not_proposer", err)
	}
	if v, err := first.GetIntent(ctx, "acme", id); err != nil || v.State != "proposed" {
		t.Fatalf("after the refusal the intent is %q (%v), want still proposed", v.State, err)
	}
	// bot1's key revoked: its approved intent runs for nobody.
	id2 := propose("w-2")
	var bot1ID string
	keys, err := admin.ListKeys(ctx)
	if err != nil {
		t.Fatalf("list keys: %v", err)
	}
	for _, p := range keys {
		if p.Name == "bot1" {
			bot1ID = p.ID
		}
	}
	if _, err := admin.RevokeKey(ctx, bot1ID); err != nil {
		t.Fatalf("revoke bot1: %v", err)
	}
	if _, err := second.Execute(ctx, "acme", id2); refusal(err).Status != 403 || refusal(err).Code != "forbidden" {
		t.Fatalf("bot2 executing a revoked proposer's intent: %v, want 403 forbidden", err)
	}
	if _, err := first.Execute(ctx, "acme", id2); refusal(err).Status != 401 || refusal(err).Code != "unauthenticated" {
		t.Fatalf("the revoked proposer executing: %v, want 401 unauthenticated", err)
	}
	// The refusals are in acme's chain.
	recs := auditRecords(t, srv.client(op), "acme", 1000)
	if n := countKind(recs, "execution.refused"); n != 2 {
		t.Fatalf("acme's chain holds %d execution.refused records, want 2", n)
	}
}

// blockedFor reports whether err is the gate's blocked decision (HTTP 403,
// code blocked) naming reason.
func blockedFor(err error, reason string) bool {
	e := refusal(err)
	return e.Status == 403 && e.Code == "blocked" && slices.Contains(e.Reasons, reason)
}

// auditRecords reads the first page (up to limit records; 0: the server's
// default) of a tenant's audit chain.
func auditRecords(t testing.TB, c *client.Client, tn string, limit int) []contract.AuditRecord {
	t.Helper()
	page, err := c.AuditPage(t.Context(), tn, 0, limit)
	if err != nil {
		t.Fatalf("%s's audit: %v", tn, err)
	}
	recs, err := page.Decode()
	if err != nil {
		t.Fatalf("%s's audit: %v", tn, err)
	}
	return recs
}

// countKind counts the records of kind.
func countKind(recs []contract.AuditRecord, kind string) int {
	n := 0
	for _, r := range recs {
		if r.Kind == kind {
			n++
		}
	}
	return n
}

func mustJSONString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// slowSink is a loopback HTTP sink whose /slow path answers after delay;
// it counts the requests that reached it.
func slowSink(t *testing.T, delay time.Duration) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	stop := make(chan struct{})
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		case <-stop:
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(sink.Close)
	t.Cleanup(func() { close(stop) }) // runs first: no request holds Close up
	return sink, &hits
}

// approvedPost has agent propose an http.post to target in acme and
// approver approve it; it returns the intent's ID.
func (s *server) approvedPost(agent, approver, target, idem string) string {
	s.t.Helper()
	v, created, err := s.client(agent).Propose(s.t.Context(), "acme", contract.IntentRequest{Action: "http.post", Target: target, Params: map[string]string{"body": "{}"}, IdempotencyKey: idem})
	if err != nil || !created {
		s.t.Fatalf("propose: created %v, %v", created, err)
	}
	s.approveVia(approver, "acme", v.Intent.ID)
	return v.Intent.ID
}

// TestBreakUnrecordedEffect (break 4): a client that disconnected after the
// executor ran cancelled the writes that record the outcome: the intent
// stayed executing (then in doubt) forever, the audit ended at
// execution.started, and the answer said nothing was changed.
func TestBreakUnrecordedEffect(t *testing.T) {
	sink, hits := slowSink(t, 1500*time.Millisecond)
	host := strings.TrimPrefix(sink.URL, "http://")
	dataDir := t.TempDir()
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	bot := mkKey(t, dataDir, "bot", "agent", "*", "--tenant", "acme")
	addr := freePort(t)
	srv := startServer(t, dataDir, addr, "--allow-host", host, "--lease", "1s")
	goLive(t, addr, root)
	id := srv.approvedPost(bot, root, sink.URL+"/slow", "cut-1")
	agent := srv.client(bot)

	// The impatient client: gone while the POST is inside the sink.
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := agent.Execute(ctx, "acme", id)
		errc <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); hits.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the execution never reached the sink")
		}
	}
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the client was not cut off")
	}
	// The effect finishes and its outcome is recorded all the same.
	var v gate.View
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if v, err = agent.GetIntent(t.Context(), "acme", id); v.State != "executing" {
			break
		}
	}
	if v.State != "succeeded" {
		t.Fatalf("after the client went away the intent is %q (%v), want succeeded", v.State, err)
	}
	recs := auditRecords(t, agent, "acme", 1000)
	if len(recs) == 0 {
		t.Fatal("acme's audit is empty")
	}
	if last := recs[len(recs)-1]; last.Kind != "execution.succeeded" || last.CorrelationID != id {
		t.Fatalf("the audit ends at %v (%v), want execution.succeeded of %s", last.Kind, last.CorrelationID, id)
	}
	out, err := agent.Execute(t.Context(), "acme", id)
	if err != nil || !out.Duplicate || hits.Load() != 1 {
		t.Fatalf("repeat: %v %+v, sink hits %d", err, out, hits.Load())
	}
}

// TestBreakInDoubtOnOneNode (break 5): node B listed an execution node A
// was still running as in doubt, and a resolve on B succeeded while the
// effect was happening. Now A's lease keeps it executing on every node;
// when A dies the lease lapses and both nodes' successors read in doubt.
func TestBreakInDoubtOnOneNode(t *testing.T) {
	sink, hits := slowSink(t, 30*time.Second)
	host := strings.TrimPrefix(sink.URL, "http://")
	url := startNATS(t)
	key := func(name, role, actions string, tenants ...string) string {
		args := []string{"keys", "create", "--nats-url", url, "--name", name, "--role", role, "--actions", actions}
		for _, tn := range tenants {
			args = append(args, "--tenant", tn)
		}
		return strings.TrimSpace(run(t, args...))
	}
	root, bot, op := key("root", "admin", "*", "system", "acme"), key("bot", "agent", "*", "acme"), key("op", "operator", "*", "acme")
	sandbox := t.TempDir()
	addrA, addrB := freePort(t), freePort(t)
	flags := []string{"--nats-url", url, "--sandbox-dir", sandbox, "--allow-host", host, "--lease", "1s"}
	a := startServer(t, "", addrA, append(flags, "--node", "node-a")...)
	b := startServer(t, "", addrB, append(flags, "--node", "node-b")...)
	goLive(t, addrA, root)
	id := a.approvedPost(bot, op, sink.URL+"/slow", "long-1")
	ctx, botA, botB, opB := t.Context(), a.client(bot), b.client(bot), b.client(op)
	go func() { _, _ = botA.Execute(ctx, "acme", id) }() // cut when node A is killed below
	for deadline := time.Now().Add(10 * time.Second); hits.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the execution never reached the sink")
		}
	}
	// For three lease periods node B sees it running: not in doubt, and
	// an operator's resolve is refused.
	for until := time.Now().Add(3 * time.Second); time.Now().Before(until); time.Sleep(200 * time.Millisecond) {
		if v, err := botB.GetIntent(ctx, "acme", id); err != nil || v.State != "executing" {
			t.Fatalf("node B while node A runs it: %q (%v), want executing", v.State, err)
		}
		if list, err := opB.ListInDoubt(ctx, "acme"); err != nil || len(list) != 0 {
			t.Fatalf("node B lists %+v in doubt while node A runs it (%v)", list, err)
		}
		if _, err := opB.Resolve(ctx, "acme", id, client.ResolveRequest{Outcome: "failed", Reason: "looks stuck"}); refusal(err).Status != 409 || refusal(err).Code != "conflict" {
			t.Fatalf("resolve on node B while node A runs it: %v, want 409 conflict", err)
		}
	}
	// Node A dies mid-effect: its lease lapses; B reads in doubt and the
	// operator resolves it there.
	a.kill()
	var v gate.View
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if v, err = botB.GetIntent(ctx, "acme", id); v.State == "in_doubt" || time.Now().After(deadline) {
			break
		}
	}
	if v.State != "in_doubt" {
		t.Fatalf("after node A died: %q (%v), want in_doubt", v.State, err)
	}
	if _, err := opB.Resolve(ctx, "acme", id, client.ResolveRequest{Outcome: "failed", Reason: "the sink shows no order"}); err != nil {
		t.Fatalf("resolve after the lapse: %v", err)
	}
	if out, err := botB.Execute(ctx, "acme", id); err != nil || !out.Duplicate || hits.Load() != 1 {
		t.Fatalf("execute after resolution: %v %+v, sink hits %d", err, out, hits.Load())
	}
}
