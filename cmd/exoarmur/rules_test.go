package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeclaredApprovalRules: `serve --approval-rules` is what the gate and
// the approvals obey, per tenant: acme requires an approval of A0 reads and
// three operators (no admin) for A3, beta keeps the built-in rules; a file
// that lowers a rule is refused at start and by check-config.
func TestDeclaredApprovalRules(t *testing.T) {
	dataDir := t.TempDir()
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme", "--tenant", "beta")
	bot := mkKey(t, dataDir, "bot", "agent", "*", "--tenant", "acme", "--tenant", "beta")
	ops := []string{
		mkKey(t, dataDir, "op1", "operator", "*", "--tenant", "acme", "--tenant", "beta"),
		mkKey(t, dataDir, "op2", "operator", "*", "--tenant", "acme", "--tenant", "beta"),
		mkKey(t, dataDir, "op3", "operator", "*", "--tenant", "acme", "--tenant", "beta"),
	}
	addr := freePort(t)
	srv := startServer(t, dataDir, addr, "--approval-rules", filepath.Join("testdata", "approval_rules.json"))
	goLive(t, addr, root)
	killswitch(t, addr, root, "disengage", "--tenant", "beta", "--reason", "e2e go live")

	propose := func(tn, action, target, idem string) string {
		t.Helper()
		code, m := srv.do("POST", "/v1/tenants/"+tn+"/intents", bot, map[string]any{"action": action, "target": target, "idempotency_key": idem, "params": map[string]string{"content": "x"}})
		if code != 201 {
			t.Fatalf("propose %s in %s: HTTP %d %v", action, tn, code, m)
		}
		return intentID(m)
	}
	execute := func(tn, id string) (int, map[string]any) {
		return srv.do("POST", "/v1/tenants/"+tn+"/intents/"+id+"/execute", bot, nil)
	}
	vote := func(tn, id, key string) (int, map[string]any) {
		return srv.do("POST", "/v1/tenants/"+tn+"/intents/"+id+"/approvals", key, map[string]string{"decision": "approve", "reason": "rules e2e"})
	}

	// A0 in acme needs an approval; in beta it does not.
	for _, tn := range []string{"acme", "beta"} {
		w := propose(tn, "fs.write", "seen.txt", "w-"+tn)
		if code, m := vote(tn, w, ops[0]); code != 200 {
			t.Fatalf("approve the write in %s: HTTP %d %v", tn, code, m)
		}
		if code, m := execute(tn, w); code != 200 {
			t.Fatalf("write in %s: HTTP %d %v", tn, code, m)
		}
	}
	r := propose("acme", "fs.read", "seen.txt", "r-acme")
	if code, m := execute("acme", r); code != 403 || !strings.Contains(mustJSONString(m), "approval_required") {
		t.Fatalf("acme A0 read without approval: HTTP %d %v, want 403 approval_required", code, m)
	}
	if code, m := vote("acme", r, ops[1]); code != 200 {
		t.Fatalf("approve the acme read: HTTP %d %v", code, m)
	}
	if code, m := execute("acme", r); code != 200 {
		t.Fatalf("acme A0 read once approved: HTTP %d %v", code, m)
	}
	if code, m := execute("beta", propose("beta", "fs.read", "seen.txt", "r-beta")); code != 200 {
		t.Fatalf("beta A0 read (built-in rules): HTTP %d %v", code, m)
	}

	// A3 in acme: three operators, and an admin's vote does not count.
	d := propose("acme", "fs.delete", "seen.txt", "d-acme")
	if code, m := vote("acme", d, root); code != 403 {
		t.Fatalf("an admin's vote on an acme A3 (operators only): HTTP %d %v, want 403", code, m)
	}
	for i, op := range ops {
		if code, m := execute("acme", d); code != 403 || !strings.Contains(mustJSONString(m), "approval_required") {
			t.Fatalf("acme A3 with %d approvals: HTTP %d %v, want 403 approval_required", i, code, m)
		}
		if code, m := vote("acme", d, op); code != 200 {
			t.Fatalf("operator %d's vote: HTTP %d %v", i+1, code, m)
		}
	}
	if code, m := execute("acme", d); code != 200 {
		t.Fatalf("acme A3 with three approvals: HTTP %d %v", code, m)
	}
	// beta A3: the built-in two, an admin counts.
	bd := propose("beta", "fs.delete", "seen.txt", "d-beta")
	for _, key := range []string{root, ops[0]} {
		if code, m := vote("beta", bd, key); code != 200 {
			t.Fatalf("beta A3 vote: HTTP %d %v", code, m)
		}
	}
	if code, m := execute("beta", bd); code != 200 {
		t.Fatalf("beta A3 with two approvals: HTTP %d %v", code, m)
	}

	// The live chain replays identically: the number each decision needed
	// is in its recorded input.
	// Replay knows no rules file: the decisions replay from their inputs.
	srv.kill()
	for _, tn := range []string{"acme", "beta"} {
		rep := run(t, "replay", "--data-dir", dataDir, "--tenant", tn)
		if !strings.Contains(rep, `"pass":true`) || strings.Contains(rep, `"mismatched":[{`) {
			t.Fatalf("replay of %s:\n%s", tn, rep)
		}
	}

	// A file that lowers a rule is refused, naming it.
	low := filepath.Join(t.TempDir(), "low.json")
	if err := os.WriteFile(low, []byte(`{"default": {"A0": {"approvals": 0, "roles": []}, "A1": {"approvals": 0, "roles": []}, "A2": {"approvals": 1, "roles": ["operator"]}, "A3": {"approvals": 2, "roles": ["operator"]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary(t), "check-config", "--data-dir", t.TempDir(), "--approval-rules", low).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "class A1: 0 approvals is below the least allowed (1)") {
		t.Fatalf("check-config with a lowered rule: %v %s", err, out)
	}
}

// TestApproverKeyConsentEndToEnd: acme's rules set approver_key_consent;
// an operator key an admin creates over the API does not authenticate
// until another person's admin key consents (`keys consent`); the creator
// cannot consent; `keys list` shows the pending key.
func TestApproverKeyConsentEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	alice := mkKey(t, dataDir, "alice", "admin", "*", "--tenant", "system", "--tenant", "acme")
	bob := mkKey(t, dataDir, "bob", "admin", "*", "--tenant", "acme")
	bot := mkKey(t, dataDir, "bot", "agent", "*", "--tenant", "acme")
	addr := freePort(t)
	srv := startServer(t, dataDir, addr, "--approval-rules", filepath.Join("testdata", "approval_rules.json"))
	goLive(t, addr, alice)

	code, m := srv.do("POST", "/v1/keys", alice, map[string]any{"name": "carol", "role": "operator", "tenants": []string{"acme"}, "actions": []string{"*"}})
	if code != 201 {
		t.Fatalf("create carol: HTTP %d %v", code, m)
	}
	carol, _ := m["key"].(string)
	pr, _ := m["principal"].(map[string]any)
	id, _ := pr["id"].(string)
	if pr["pending_consent"] != true {
		t.Fatalf("carol's key: %v, want pending_consent", pr)
	}
	code, m = srv.do("POST", "/v1/tenants/acme/intents", bot, map[string]any{"action": "fs.write", "target": "c.txt", "idempotency_key": "c1", "params": map[string]string{"content": "x"}})
	if code != 201 {
		t.Fatalf("propose: HTTP %d %v", code, m)
	}
	intent := intentID(m)
	vote := func() (int, map[string]any) {
		return srv.do("POST", "/v1/tenants/acme/intents/"+intent+"/approvals", carol, map[string]string{"decision": "approve", "reason": "e2e"})
	}
	if code, m := vote(); code != 401 || !strings.Contains(mustJSONString(m), "awaits a second admin") {
		t.Fatalf("a pending key votes: HTTP %d %v, want 401 naming the consent", code, m)
	}
	consent := func(key string) (string, error) {
		cmd := exec.Command(binary(t), "keys", "consent", id, "--reason", "carol joins on-call", "--server", "http://"+addr)
		cmd.Env = append(os.Environ(), "EXOARMUR_API_KEY="+key)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := consent(alice); err == nil || !strings.Contains(out, "another person") {
		t.Fatalf("the creator consenting: %v %s, want refused", err, out)
	}
	if out, err := consent(bob); err != nil || !strings.Contains(out, "consented to "+id) {
		t.Fatalf("bob consenting: %v %s", err, out)
	}
	if code, m := vote(); code != 200 {
		t.Fatalf("carol's vote after consent: HTTP %d %v", code, m)
	}
	code, m = srv.do("GET", "/v1/tenants/acme/audit", alice, nil)
	if code != 200 || !strings.Contains(mustJSONString(m), `"key.consented"`) {
		t.Fatalf("acme's audit lacks key.consented: HTTP %d", code)
	}
}
