package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
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

	ctx, agent := t.Context(), srv.client(bot)
	propose := func(tn, action, target, idem string) string {
		t.Helper()
		v, created, err := agent.Propose(ctx, tn, contract.IntentRequest{Action: action, Target: target, IdempotencyKey: idem, Params: map[string]string{"content": "x"}})
		if err != nil || !created {
			t.Fatalf("propose %s in %s: created %v, %v", action, tn, created, err)
		}
		return v.Intent.ID
	}
	execute := func(tn, id string) error {
		_, err := agent.Execute(ctx, tn, id)
		return err
	}
	vote := func(tn, id, key string) error {
		_, err := srv.client(key).DecideApproval(ctx, tn, id, contract.ApprovalDecision{Decision: "approve", Reason: "rules e2e"})
		return err
	}

	// A0 in acme needs an approval; in beta it does not.
	for _, tn := range []string{"acme", "beta"} {
		w := propose(tn, "fs.write", "seen.txt", "w-"+tn)
		if err := vote(tn, w, ops[0]); err != nil {
			t.Fatalf("approve the write in %s: %v", tn, err)
		}
		if err := execute(tn, w); err != nil {
			t.Fatalf("write in %s: %v", tn, err)
		}
	}
	r := propose("acme", "fs.read", "seen.txt", "r-acme")
	if err := execute("acme", r); !blockedFor(err, "approval_required") {
		t.Fatalf("acme A0 read without approval: %v, want 403 blocked approval_required", err)
	}
	if err := vote("acme", r, ops[1]); err != nil {
		t.Fatalf("approve the acme read: %v", err)
	}
	if err := execute("acme", r); err != nil {
		t.Fatalf("acme A0 read once approved: %v", err)
	}
	if err := execute("beta", propose("beta", "fs.read", "seen.txt", "r-beta")); err != nil {
		t.Fatalf("beta A0 read (built-in rules): %v", err)
	}

	// A3 in acme: three operators, and an admin's vote does not count.
	d := propose("acme", "fs.delete", "seen.txt", "d-acme")
	if err := vote("acme", d, root); refusal(err).Status != 403 || refusal(err).Code != "forbidden" {
		t.Fatalf("an admin's vote on an acme A3 (operators only): %v, want 403 forbidden", err)
	}
	for i, op := range ops {
		if err := execute("acme", d); !blockedFor(err, "approval_required") {
			t.Fatalf("acme A3 with %d approvals: %v, want 403 blocked approval_required", i, err)
		}
		if err := vote("acme", d, op); err != nil {
			t.Fatalf("operator %d's vote: %v", i+1, err)
		}
	}
	if err := execute("acme", d); err != nil {
		t.Fatalf("acme A3 with three approvals: %v", err)
	}
	// beta A3: the built-in two, an admin counts.
	bd := propose("beta", "fs.delete", "seen.txt", "d-beta")
	for _, key := range []string{root, ops[0]} {
		if err := vote("beta", bd, key); err != nil {
			t.Fatalf("beta A3 vote: %v", err)
		}
	}
	if err := execute("beta", bd); err != nil {
		t.Fatalf("beta A3 with two approvals: %v", err)
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

	ctx := t.Context()
	created, err := srv.client(alice).CreateKey(ctx, client.KeyRequest{Name: "carol", Role: "operator", Tenants: []string{"acme"}, Actions: []string{"*"}})
	if err != nil {
		t.Fatalf("create carol: %v", err)
	}
	carol, id := created.Key, created.Principal.ID
	if !created.Principal.PendingConsent {
		t.Fatalf("carol's key: %+v, want pending_consent", created.Principal)
	}
	v, isNew, err := srv.client(bot).Propose(ctx, "acme", contract.IntentRequest{Action: "fs.write", Target: "c.txt", IdempotencyKey: "c1", Params: map[string]string{"content": "x"}})
	if err != nil || !isNew {
		t.Fatalf("propose: created %v, %v", isNew, err)
	}
	intent := v.Intent.ID
	vote := func() error {
		_, err := srv.client(carol).DecideApproval(ctx, "acme", intent, contract.ApprovalDecision{Decision: "approve", Reason: "e2e"})
		return err
	}
	if err := vote(); refusal(err).Status != 401 || refusal(err).Code != "unauthenticated" || !strings.Contains(refusal(err).Message, "awaits a second admin") {
		t.Fatalf("a pending key votes: %v, want 401 unauthenticated naming the consent", err)
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
	if err := vote(); err != nil {
		t.Fatalf("carol's vote after consent: %v", err)
	}
	if n := countKind(auditRecords(t, srv.client(alice), "acme", 0), "key.consented"); n == 0 {
		t.Fatal("acme's audit lacks key.consented")
	}
}
