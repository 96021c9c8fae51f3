package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// noReadsPolicy forbids fs.read outright: a bundle whose effect is seen
// at once (fs.read is A0: no approval stands in the way).
const noReadsPolicy = `@id("no-reads")
@scope("action")
forbid (principal, action == Action::"fs.read", resource);
`

// TestPolicyActivationAcrossNodes: two server processes on one NATS
// process. A tenant's bundle activated through node A governs node B's
// next decision as soon as the activation returned (every live node
// applied it first), and only that tenant; a global bundle governs every
// tenant without its own; another tenant's operator cannot activate
// anything for acme (404); the chains verify with every decision under
// the bundle it was made under.
func TestPolicyActivationAcrossNodes(t *testing.T) {
	url := startNATS(t)
	agent, admin := createKeys(t, "--nats-url", url)
	betaAgent := strings.TrimSpace(run(t, "keys", "create", "--nats-url", url, "--name", "beta-agent", "--role", "agent", "--tenant", "beta", "--actions", "*"))
	betaOp := strings.TrimSpace(run(t, "keys", "create", "--nats-url", url, "--name", "beta-op", "--role", "operator", "--tenant", "beta", "--actions", "*"))
	sandbox := t.TempDir()
	addrA, addrB := freePort(t), freePort(t)
	startServer(t, "", addrA, "--nats-url", url, "--sandbox-dir", sandbox, "--node", "node-a")
	b := startServer(t, "", addrB, "--nats-url", url, "--sandbox-dir", sandbox, "--node", "node-b")
	goLive(t, addrA, admin)
	killswitch(t, addrA, betaOp, "disengage", "--tenant", "beta", "--reason", "e2e go live")
	must(t, os.WriteFile(filepath.Join(sandbox, "r.txt"), []byte("hello"), 0o644))

	dir := t.TempDir()
	strict := filepath.Join(dir, "strict")
	run(t, "policy", "init", "--no-tests", strict)
	must(t, os.WriteFile(filepath.Join(strict, "zz-no-reads.cedar"), []byte(noReadsPolicy), 0o644))
	cli := func(key string, args ...string) (int, string) {
		return exitOf(t, []string{"EXOARMUR_API_KEY=" + key, "EXOARMUR_SERVER=http://" + addrA}, args...)
	}
	n := 0
	read := func(c *client.Client, tn string) error {
		t.Helper()
		n++
		v, _, err := c.Propose(t.Context(), tn, contract.IntentRequest{Action: "fs.read", Target: "r.txt", IdempotencyKey: "read-" + string(rune('a'+n))})
		if err != nil {
			t.Fatalf("propose on %s: %v", tn, err)
		}
		_, err = c.Execute(t.Context(), tn, v.Intent.ID)
		return err
	}
	agentB, betaB := b.client(agent), b.client(betaAgent)
	if err := read(agentB, "acme"); err != nil {
		t.Fatalf("a read before any activation: %v", err)
	}

	// Another tenant's operator: acme does not exist for it.
	if code, out := cli(betaOp, "policy", "activate", strict, "--tenant", "acme", "--reason", "not mine"); code != 1 || !strings.Contains(out, "404") {
		t.Fatalf("beta's operator activating for acme: exit %d\n%s", code, out)
	}
	// Neither --tenant nor --global: a usage error, nothing sent.
	if code, out := cli(admin, "policy", "activate", strict, "--reason", "which?"); code != 2 || !strings.Contains(out, "exactly one of --tenant T and --global") {
		t.Fatalf("no scope: exit %d\n%s", code, out)
	}

	// acme's bundle through A; B decides under it at once; beta does not.
	if code, out := cli(admin, "policy", "activate", strict, "--tenant", "acme", "--reason", "CHG-1 no reads"); code != 0 || !strings.Contains(out, "applied by 2 live node(s)") {
		t.Fatalf("policy activate: exit %d\n%s", code, out)
	}
	if err := read(agentB, "acme"); !blockedFor(err, "policy_denied") {
		t.Fatalf("a read on node B right after the activation on A: %v, want blocked policy_denied", err)
	}
	if err := read(betaB, "beta"); err != nil {
		t.Fatalf("beta, with no bundle of its own, under the node's: %v", err)
	}
	// The global bundle: beta now under it; acme keeps its own.
	if code, out := cli(agent, "policy", "activate", strict, "--global", "--reason", "x"); code != 1 || !strings.Contains(out, "403") {
		t.Fatalf("an agent activating globally: exit %d\n%s", code, out)
	}
	if code, out := cli(admin, "policy", "activate", strict, "--global", "--reason", "CHG-2 no reads anywhere"); code != 0 {
		t.Fatalf("policy activate --global: exit %d\n%s", code, out)
	}
	if err := read(betaB, "beta"); !blockedFor(err, "policy_denied") {
		t.Fatalf("beta on node B after the global activation: %v, want blocked policy_denied", err)
	}
	if code, out := exitOf(t, []string{"EXOARMUR_API_KEY=" + betaOp, "EXOARMUR_SERVER=http://" + addrB}, "policy", "active", "--tenant", "beta"); code != 0 || !strings.Contains(out, "the global activation") || !strings.Contains(out, "CHG-2") {
		t.Fatalf("policy active on B: exit %d\n%s", code, out)
	}

	// Both chains hold their activations and verify: every decision
	// re-decided under the bundle it was recorded with (from the archive).
	for _, tc := range []struct{ tn, key string }{{"acme", admin}, {"beta", betaOp}} {
		c := b.client(tc.key)
		if got := countKind(auditRecords(t, c, tc.tn, 0), "policy.activated"); tc.tn == "acme" && got != 1 || tc.tn == "beta" && got != 0 {
			t.Fatalf("%s: %d policy.activated records", tc.tn, got)
		}
		rep, err := c.AuditVerify(t.Context(), tc.tn)
		if err != nil || !rep.Pass || rep.Decisions == 0 {
			t.Fatalf("verify %s: %+v %v", tc.tn, rep, err)
		}
	}
}
