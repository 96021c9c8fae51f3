package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/replay"
)

// exitOf runs the binary and returns its exit code and combined output.
func exitOf(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return 0, string(out)
}

// ticketsPolicy is the cookbook's policy (docs/POLICIES.md): tickets
// only with titles under 200 characters, on weekdays.
const ticketsPolicy = `@id("tickets-short-titles-on-weekdays")
@scope("action")
forbid (principal, action == Action::"tickets.create", resource)
unless {
  context.sizes.title < 200 &&
  context.time.weekday != "saturday" && context.time.weekday != "sunday"
};
`

// ticketCases are the cookbook's policy tests.
// (HOST: the ticket service's host:port, on the allowlist).
func ticketCases(host string) string {
	return strings.NewReplacer("LONG_TITLE", strings.Repeat("X", 200), "HOST", host).Replace(ticketCasesTemplate)
}

const ticketCasesTemplate = `{"cases": [
  {"name": "a short title on a wednesday",
   "action": {"principal": "key_bot", "role": "agent", "action": "tickets.create", "target": "ops",
              "allowlist": ["HOST"], "params": {"title": "Disk full on db-1"}, "time": "2026-12-02T10:00:00Z"},
   "expect": {"decision": "allow", "reasons": ["http-allowlisted-host"]}},
  {"name": "a title of 200 characters",
   "action": {"principal": "key_bot", "role": "agent", "action": "tickets.create", "target": "ops",
              "allowlist": ["HOST"], "params": {"title": "LONG_TITLE"}, "time": "2026-12-02T10:00:00Z"},
   "expect": {"decision": "deny", "reasons": ["tickets-short-titles-on-weekdays"]}},
  {"name": "a saturday",
   "action": {"principal": "key_bot", "role": "agent", "action": "tickets.create", "target": "ops",
              "allowlist": ["HOST"], "params": {"title": "Disk full on db-1"}, "time": "2026-12-05T10:00:00Z"},
   "expect": {"decision": "deny", "reasons": ["tickets-short-titles-on-weekdays"]}},
  {"name": "no title: denied as the gate denies it",
   "action": {"principal": "key_bot", "role": "agent", "action": "tickets.create", "target": "ops",
              "allowlist": ["HOST"], "params": {}, "time": "2026-12-02T10:00:00Z"},
   "expect": {"decision": "deny"}}
]}
`

// TestPolicyCookbook is docs/POLICIES.md's cookbook, end to end: declare
// tickets.create, write a policy allowing it only for titles under 200
// characters on weekdays, test it with policy test (and see a wrong case
// fail), let a batch of proposals run under the default bundle, look at
// the counterfactual replay of the candidate, activate it for the tenant
// through the API (exoarmur policy activate: audited, refused to an
// agent), then propose, approve and execute under it; the store's replay
// re-decides every decision under its own bundle.
func TestPolicyCookbook(t *testing.T) {
	tickets := newTicketService(t)
	dir := t.TempDir()
	actionsPath := writeTicketsActions(t, dir, tickets.srv.URL)
	secretEnv := []string{"TICKETS_TOKEN=" + ticketsToken}

	// Write and test the candidate.
	candidate := filepath.Join(dir, "policies")
	run(t, "policy", "init", "--no-tests", candidate)
	must(t, os.WriteFile(filepath.Join(candidate, "tickets.cedar"), []byte(ticketsPolicy), 0o644))
	must(t, os.WriteFile(filepath.Join(candidate, "tickets_test.json"), []byte(ticketCases(tickets.host)), 0o644))
	if code, out := exitOf(t, nil, "policy", "validate", "--actions-file", actionsPath, candidate); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("policy validate: exit %d\n%s", code, out)
	}
	if code, out := exitOf(t, nil, "policy", "test", "--actions-file", actionsPath, candidate); code != 0 || !strings.Contains(out, "4 cases, 4 passed, 0 failed") {
		t.Fatalf("policy test: exit %d\n%s", code, out)
	}
	// Without the actions file, tickets.create is no action: refused, named.
	if code, out := exitOf(t, nil, "policy", "validate", candidate); code != 1 || !strings.Contains(out, "tickets.cedar:1:1: policy tickets-short-titles-on-weekdays") {
		t.Fatalf("policy validate without the actions: exit %d\n%s", code, out)
	}
	// A wrong expectation fails, naming the case.
	wrong := filepath.Join(dir, "wrong_test.json")
	must(t, os.WriteFile(wrong, []byte(strings.Replace(ticketCases(tickets.host), `"decision": "allow"`, `"decision": "deny"`, 1)), 0o644))
	if code, out := exitOf(t, nil, "policy", "test", "--actions-file", actionsPath, "--cases", wrong, candidate); code != 1 ||
		!strings.Contains(out, "FAIL wrong_test.json: a short title on a wednesday: got allow [http-allowlisted-host], want deny") {
		t.Fatalf("policy test of a wrong case: exit %d\n%s", code, out)
	}
	// A misspelt attribute refuses the start, with file and line.
	bad := filepath.Join(dir, "bad")
	run(t, "policy", "init", "--no-tests", bad)
	must(t, os.WriteFile(filepath.Join(bad, "z.cedar"), []byte("\n@id(\"typo\")\npermit (principal, action == Action::\"tickets.create\", resource) when { context.sizes.titel < 3 };\n"), 0o644))
	dataDir := filepath.Join(dir, "data")
	if code, out := exitOf(t, secretEnv, "serve", "--data-dir", dataDir, "--listen", freePort(t), "--actions-file", actionsPath, "--policy-dir", bad); code == 0 ||
		!strings.Contains(out, "z.cedar:2:1: policy typo") {
		t.Fatalf("serve with a misspelt attribute: exit %d\n%s", code, out)
	}

	// A batch under the default bundle.
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	// The agent is granted tickets.create by name, which only the actions
	// file declares.
	if code, out := exitOf(t, nil, "keys", "create", "--data-dir", dataDir, "--name", "bot", "--role", "agent", "--tenant", "acme", "--actions", "tickets.create"); code != 2 ||
		!strings.Contains(out, `action "tickets.create": unknown action type`) {
		t.Fatalf("keys create of a declared action without the actions file: exit %d\n%s", code, out)
	}
	bot := mkKey(t, dataDir, "bot", "agent", "tickets.create", "--tenant", "acme", "--actions-file", actionsPath)
	addr := freePort(t)
	serveArgs := []string{"--allow-host", tickets.host, "--actions-file", actionsPath}
	srv := startReady(t, secretEnv, dataDir, addr, append(serveArgs, "--shadow-policy-dir", candidate)...)
	goLive(t, addr, root)
	// Through the API, the server knows its declared actions.
	if k, err := srv.client(root).CreateKey(t.Context(), client.KeyRequest{Name: "bot-2", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"tickets.create"}}); err != nil ||
		!slices.Contains(k.Principal.Actions, "tickets.create") {
		t.Fatalf("create a key for tickets.create through the API: %+v, %v", k, err)
	}
	long := strings.Repeat("y", 250)
	propose := func(srv *server, idem, title string) (string, error) {
		v, _, err := srv.client(bot).Propose(t.Context(), "acme", contract.IntentRequest{Action: "tickets.create", Target: "ops",
			Params: map[string]string{"title": title}, IdempotencyKey: idem})
		return v.Intent.ID, err
	}
	for i, title := range []string{"short one", long, "short two"} {
		id, err := propose(srv, "batch-"+string(rune('a'+i)), title)
		if err != nil {
			t.Fatalf("propose: %v", err)
		}
		srv.approveVia(root, "acme", id)
		if _, err := srv.client(bot).Execute(t.Context(), "acme", id); err != nil {
			t.Fatalf("execute under the default bundle: %v", err)
		}
	}
	// Shadow mode: the candidate was evaluated on every decision, and each
	// difference counted and recorded, without changing what ran.
	day := time.Now().UTC().Weekday()
	weekend := day == time.Saturday || day == time.Sunday
	want := uint64(2) // the long title's proposal and execution
	if weekend {
		want = 6
	}
	var shadow gate.ShadowSummary
	getJSON(t, "http://"+addr+"/v1/tenants/acme/policy/shadow", root, &shadow)
	if shadow.Decisions != 6 || shadow.Differ != want || len(shadow.Recent) != int(want) || shadow.Enforcement != "none" {
		t.Fatalf("shadow summary %+v", shadow)
	}
	// The records are written off the enforced path: wait for them (bounded).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := countKind(auditRecords(t, srv.client(root), "acme", 0), gate.KindShadowDiffers)
		if got == int(want) {
			break
		}
		if got > int(want) || time.Now().After(deadline) {
			t.Fatalf("%d policy.shadow_differs records, want %d", got, want)
		}
	}
	if len(tickets.requests()) != 3 {
		t.Fatalf("the shadow bundle changed what ran: %d tickets", len(tickets.requests()))
	}
	srv.kill()

	// The counterfactual: what the candidate would have decided otherwise.
	report := filepath.Join(dir, "counterfactual.json")
	if code, out := exitOf(t, nil, "replay", "--data-dir", dataDir, "--actions-file", actionsPath, "--policy-dir", candidate, "--out", report); code != 0 {
		t.Fatalf("counterfactual replay: exit %d\n%s", code, out)
	}
	var cf replay.CounterfactualReport
	b, err := os.ReadFile(report)
	must(t, err)
	must(t, json.Unmarshal(b, &cf))
	t.Logf("counterfactual: %d records, %d decisions, %d differ", cf.Records, cf.Decisions, cf.Differ)
	for _, d := range cf.Differences {
		if d.Action != "tickets.create" || d.Candidate.Verdict != contract.Deny || !strings.Contains(d.Candidate.Policies, "tickets-short-titles-on-weekdays") {
			t.Fatalf("difference %+v", d)
		}
	}
	// The long title's proposal, approval and execution decisions differ
	// (on a weekend, every ticket's).
	if cf.Differ != want || cf.Decisions != 6 || len(cf.Differences) != int(want) {
		t.Fatalf("counterfactual %+v", cf)
	}
	if !weekend {
		for _, d := range cf.Differences {
			if d.Kind == "gate.allowed" && d.Recorded.Verdict != contract.Allow {
				t.Fatalf("difference %+v", d)
			}
		}
	}

	// Activate the candidate for acme through the API, on the same server
	// (no restart): an agent may not, a reason is required, an operator or
	// admin may.
	srv = startReady(t, secretEnv, dataDir, addr, serveArgs...)
	cli := func(key string, args ...string) (int, string) {
		return exitOf(t, []string{"EXOARMUR_API_KEY=" + key, "EXOARMUR_SERVER=http://" + addr}, args...)
	}
	if code, out := cli(bot, "policy", "activate", candidate, "--tenant", "acme", "--reason", "mine now"); code != 1 || !strings.Contains(out, "may not activate policy") {
		t.Fatalf("an agent activating: exit %d\n%s", code, out)
	}
	if code, out := cli(root, "policy", "activate", candidate, "--tenant", "acme"); code != 2 || !strings.Contains(out, "--reason is required") {
		t.Fatalf("an activation without a reason: exit %d\n%s", code, out)
	}
	if code, out := cli(root, "policy", "activate", bad, "--tenant", "acme", "--reason", "typo"); code != 1 || !strings.Contains(out, "z.cedar:2:1: policy typo") {
		t.Fatalf("activating a misspelt attribute: exit %d\n%s", code, out)
	}
	code, out := cli(root, "policy", "activate", candidate, "--tenant", "acme", "--reason", "CHG-17: tickets only short, on weekdays", "--json")
	if code != 0 {
		t.Fatalf("policy activate: exit %d\n%s", code, out)
	}
	var act struct {
		Hash, Previous string
		Propagation    struct{ Confirmed []string }
	}
	must(t, json.Unmarshal([]byte(out), &act))
	if act.Previous != policy.Default().Hash() || act.Hash == act.Previous || len(act.Propagation.Confirmed) != 1 {
		t.Fatalf("activation %s", out)
	}
	if code, out := cli(root, "policy", "active", "--tenant", "acme"); code != 0 || !strings.Contains(out, act.Hash) || !strings.Contains(out, "CHG-17") {
		t.Fatalf("policy active: exit %d\n%s\n%s", code, out, srv.logs.String())
	}
	var recs []contract.AuditRecord
	for _, r := range auditRecords(t, srv.client(root), "acme", 0) {
		if r.Kind == "policy.activated" {
			recs = append(recs, r)
		}
	}
	if len(recs) != 1 || !strings.Contains(string(recs[0].Payload), act.Hash) || !strings.Contains(string(recs[0].Payload), act.Previous) ||
		!strings.Contains(string(recs[0].Payload), "CHG-17") || recs[0].Actor == "" {
		t.Fatalf("policy.activated records: %+v", recs)
	}
	id, err := propose(srv, "after-long", long)
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	if _, err := srv.client(bot).Execute(t.Context(), "acme", id); !blockedFor(err, "policy_denied") {
		t.Fatalf("a long title under the candidate: %v, want blocked policy_denied", err)
	}
	id, err = propose(srv, "after-short", "short three")
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	srv.approveVia(root, "acme", id)
	before := len(tickets.requests())
	_, err = srv.client(bot).Execute(t.Context(), "acme", id)
	if weekend {
		if !blockedFor(err, "policy_denied") {
			t.Fatalf("a ticket on a weekend: %v, want blocked policy_denied", err)
		}
	} else if err != nil || len(tickets.requests()) != before+1 || tickets.requests()[before].auth != "Bearer "+ticketsToken {
		t.Fatalf("a short title on a weekday: %v, %+v", err, tickets.requests())
	}
	srv.kill()
	// Every decision replays under the bundle it was recorded with: the
	// default and the candidate, archived in the store.
	if code, out := exitOf(t, nil, "replay", "--data-dir", dataDir, "--actions-file", actionsPath, "--out", filepath.Join(dir, "r.json")); code != 0 {
		t.Fatalf("replay: exit %d\n%s", code, out)
	}
}

// getJSON GETs url with key and decodes the 200 answer into v.
func getJSON(t *testing.T, url, key string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	must(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	must(t, json.NewDecoder(resp.Body).Decode(v))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startReady starts a server with extra environment variables and waits
// until it is ready.
func startReady(t *testing.T, env []string, dataDir, addr string, extra ...string) *server {
	t.Helper()
	srv := startServerEnv(t, env, dataDir, addr, extra...)
	for deadline := time.Now().Add(30 * time.Second); srv.client("").Ready(t.Context()) != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("server not ready:\n%s", srv.logs.String())
		}
	}
	return srv
}
