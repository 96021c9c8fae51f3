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
	"strings"
	"sync/atomic"
	"testing"
	"time"
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

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
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

	// Minting operators for acme: not found (acme does not exist for beta).
	for _, name := range []string{"op1", "op2"} {
		code, m := srv.do("POST", "/v1/keys", betaAdmin, map[string]any{"name": name, "role": "operator", "tenants": []string{"acme"}, "actions": []string{"*"}})
		if code != 404 {
			t.Fatalf("beta admin minting an acme operator: HTTP %d %v, want 404", code, m)
		}
	}
	// Nor a key beyond its own powers in beta.
	if code, m := srv.do("POST", "/v1/keys", betaAdmin, map[string]any{"name": "x", "role": "admin", "tenants": []string{"beta", "system"}, "actions": []string{"*"}}); code != 403 {
		t.Fatalf("beta admin minting a system key: HTTP %d %v, want 403", code, m)
	}
	// Reading acme's audit, listing acme's keys, revoking acme's keys.
	if code, _ := srv.do("GET", "/v1/tenants/acme/audit", betaAdmin, nil); code != 404 {
		t.Fatalf("beta admin reading acme's audit: HTTP %d, want 404", code)
	}
	code, m := srv.do("GET", "/v1/keys", betaAdmin, nil)
	if code != 200 || strings.Contains(mustJSONString(m), "acme") || strings.Contains(mustJSONString(m), "root") {
		t.Fatalf("beta admin's key list shows another tenant's keys: HTTP %d %v", code, m)
	}
	code, m = srv.do("GET", "/v1/keys", root, nil)
	var acmeBotID string
	keys, _ := m["keys"].([]any)
	for _, k := range keys {
		if p, _ := k.(map[string]any); p["name"] == "acme-bot" {
			acmeBotID, _ = p["id"].(string)
		}
	}
	if code != 200 || len(keys) != 3 || acmeBotID == "" {
		t.Fatalf("the system admin lists every key: HTTP %d, %d keys", code, len(keys))
	}
	if code, _ := srv.do("DELETE", "/v1/keys/"+acmeBotID, betaAdmin, nil); code != 404 {
		t.Fatalf("beta admin revoking acme's key: HTTP %d, want 404", code)
	}
	if code, _ := srv.do("GET", "/v1/tenants/acme/audit?limit=1", acmeBot, nil); code != 200 {
		t.Fatalf("acme's key stopped working: HTTP %d", code)
	}
	// The global switch is a global power: not beta's admin's.
	if code, _ := srv.do("PUT", "/v1/killswitch", betaAdmin, map[string]any{"engaged": false, "reason": "takeover"}); code != 403 {
		t.Fatalf("beta admin flipping the global switch: HTTP %d, want 403", code)
	}
	if code, _ := srv.do("PUT", "/v1/killswitch", root, map[string]any{"engaged": false, "reason": "go live"}); code != 200 {
		t.Fatalf("the system admin flipping the global switch: HTTP %d", code)
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

	code, m := srv.do("POST", "/v1/tenants/acme/intents", bot, map[string]any{"action": "fs.delete", "target": "victim.txt", "idempotency_key": "del-1"})
	if code != 201 {
		t.Fatalf("propose: HTTP %d %v", code, m)
	}
	id := intentID(m)
	vote := func(key string) (int, map[string]any) {
		return srv.do("POST", "/v1/tenants/acme/intents/"+id+"/approvals", key, map[string]string{"decision": "approve", "reason": "e2e"})
	}
	if code, m := vote(reader); code != 403 {
		t.Fatalf("an A0 operator's vote on an A3 delete: HTTP %d %v, want 403", code, m)
	}
	if code, m := vote(alice1); code != 200 {
		t.Fatalf("alice's vote: HTTP %d %v", code, m)
	}
	if code, m := vote(alice2); code != 409 {
		t.Fatalf("alice's second key: HTTP %d %v, want 409", code, m)
	}
	if code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", bot, nil); code != 403 || !strings.Contains(mustJSONString(m), "approval_required") {
		t.Fatalf("execute with one person's approval: HTTP %d %v, want 403 approval_required", code, m)
	}
	// The queue shows who stands behind each vote.
	code, m = srv.do("GET", "/v1/tenants/acme/approvals", alice1, nil)
	if code != 200 || !strings.Contains(mustJSONString(m), `"owner":"owner:alice"`) {
		t.Fatalf("approval queue without lineage: HTTP %d %v", code, m)
	}
	if code, m := vote(bob); code != 200 {
		t.Fatalf("bob's vote: HTTP %d %v", code, m)
	}
	if code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", bot, nil); code != 200 {
		t.Fatalf("execute with two people's approval: HTTP %d %v", code, m)
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

	propose := func(idem string) string {
		code, m := srv.do("POST", "/v1/tenants/acme/intents", bot1, map[string]any{"action": "fs.write", "target": "a.txt", "params": map[string]string{"content": idem}, "idempotency_key": idem})
		if code != 201 {
			t.Fatalf("propose: HTTP %d %v", code, m)
		}
		srv.approveVia(op, "acme", intentID(m))
		return intentID(m)
	}
	id := propose("w-1")
	code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", bot2, nil)
	if code != 403 || errCode(m) != "forbidden" || !strings.Contains(mustJSONString(m), "not_proposer") {
		t.Fatalf("bot2 executing bot1's approved intent: HTTP %d %v, want 403 not_proposer", code, m)
	}
	if code, m := srv.do("GET", "/v1/tenants/acme/intents/"+id, bot1, nil); code != 200 || m["state"] != "proposed" {
		t.Fatalf("after the refusal the intent is %v (HTTP %d), want still proposed", m["state"], code)
	}
	// bot1's key revoked: its approved intent runs for nobody.
	id2 := propose("w-2")
	var bot1ID string
	_, lm := srv.do("GET", "/v1/keys", root, nil)
	for _, k := range lm["keys"].([]any) {
		if p := k.(map[string]any); p["name"] == "bot1" {
			bot1ID = p["id"].(string)
		}
	}
	if code, m := srv.do("DELETE", "/v1/keys/"+bot1ID, root, nil); code != 200 {
		t.Fatalf("revoke bot1: HTTP %d %v", code, m)
	}
	if code, _ := srv.do("POST", "/v1/tenants/acme/intents/"+id2+"/execute", bot2, nil); code != 403 {
		t.Fatalf("bot2 executing a revoked proposer's intent: HTTP %d, want 403", code)
	}
	if code, _ := srv.do("POST", "/v1/tenants/acme/intents/"+id2+"/execute", bot1, nil); code != 401 {
		t.Fatalf("the revoked proposer executing: HTTP %d, want 401", code)
	}
	// The refusals are in acme's chain.
	_, am := srv.do("GET", "/v1/tenants/acme/audit?limit=1000", op, nil)
	if n := strings.Count(mustJSONString(am), `"kind":"execution.refused"`); n != 2 {
		t.Fatalf("acme's chain holds %d execution.refused records, want 2", n)
	}
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
	code, m := s.do("POST", "/v1/tenants/acme/intents", agent, map[string]any{"action": "http.post", "target": target, "params": map[string]string{"body": "{}"}, "idempotency_key": idem})
	if code != 201 {
		s.t.Fatalf("propose: HTTP %d %v", code, m)
	}
	s.approveVia(approver, "acme", intentID(m))
	return intentID(m)
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

	// The impatient client: gone while the POST is inside the sink.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/v1/tenants/acme/intents/"+id+"/execute", nil)
	req.Header.Set("Authorization", "Bearer "+bot)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
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
	var state any
	var m map[string]any
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, m = srv.do("GET", "/v1/tenants/acme/intents/"+id, bot, nil); m["state"] != "executing" {
			break
		}
	}
	if state = m["state"]; state != "succeeded" {
		t.Fatalf("after the client went away the intent is %v, want succeeded", state)
	}
	_, am := srv.do("GET", "/v1/tenants/acme/audit?limit=1000", bot, nil)
	recs, _ := am["records"].([]any)
	last, _ := recs[len(recs)-1].(map[string]any)
	if last["kind"] != "execution.succeeded" || last["correlation_id"] != id {
		t.Fatalf("the audit ends at %v (%v), want execution.succeeded of %s", last["kind"], last["correlation_id"], id)
	}
	code, m := srv.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", bot, nil)
	if code != 200 || m["duplicate"] != true || hits.Load() != 1 {
		t.Fatalf("repeat: HTTP %d %v, sink hits %d", code, m, hits.Load())
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
	go func() {
		req, _ := http.NewRequest("POST", "http://"+addrA+"/v1/tenants/acme/intents/"+id+"/execute", nil)
		req.Header.Set("Authorization", "Bearer "+bot)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); hits.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the execution never reached the sink")
		}
	}
	// For three lease periods node B sees it running: not in doubt, and
	// an operator's resolve is refused.
	for until := time.Now().Add(3 * time.Second); time.Now().Before(until); time.Sleep(200 * time.Millisecond) {
		if _, m := b.do("GET", "/v1/tenants/acme/intents/"+id, bot, nil); m["state"] != "executing" {
			t.Fatalf("node B while node A runs it: %v, want executing", m["state"])
		}
		if _, m := b.do("GET", "/v1/tenants/acme/intents?state=in_doubt", op, nil); len(m["intents"].([]any)) != 0 {
			t.Fatalf("node B lists %v in doubt while node A runs it", m["intents"])
		}
		if code, m := b.do("POST", "/v1/tenants/acme/intents/"+id+"/resolve", op, map[string]string{"outcome": "failed", "reason": "looks stuck"}); code != 409 {
			t.Fatalf("resolve on node B while node A runs it: HTTP %d %v, want 409", code, m)
		}
	}
	// Node A dies mid-effect: its lease lapses; B reads in doubt and the
	// operator resolves it there.
	a.kill()
	var m map[string]any
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, m = b.do("GET", "/v1/tenants/acme/intents/"+id, bot, nil); m["state"] == "in_doubt" || time.Now().After(deadline) {
			break
		}
	}
	if m["state"] != "in_doubt" {
		t.Fatalf("after node A died: %v, want in_doubt", m["state"])
	}
	if code, m := b.do("POST", "/v1/tenants/acme/intents/"+id+"/resolve", op, map[string]string{"outcome": "failed", "reason": "the sink shows no order"}); code != 200 {
		t.Fatalf("resolve after the lapse: HTTP %d %v", code, m)
	}
	if code, m := b.do("POST", "/v1/tenants/acme/intents/"+id+"/execute", bot, nil); code != 200 || m["duplicate"] != true || hits.Load() != 1 {
		t.Fatalf("execute after resolution: HTTP %d %v, sink hits %d", code, m, hits.Load())
	}
}
