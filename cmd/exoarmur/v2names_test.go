package main_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// TestWideNamedActionEndToEnd: a declared action with a v2 name
// (tickets.create_v2) beside its V1-named twin (tickets.create), through
// the real server: a key is granted it by name over REST (key_create v2)
// and with the CLI, an agent proposes it, an admin approves, the agent
// executes and the ticket service receives the request. Its stored intent
// is v2 and the records about it are v1 envelopes; the twin's intent is
// v1. A bad name is a 400 invalid_request naming the field. The chain
// verifies and replays.
func TestWideNamedActionEndToEnd(t *testing.T) {
	tickets := newTicketService(t)
	dir := t.TempDir()
	// The cookbook's file with its action also declared as tickets.create_v2.
	path := writeTicketsActions(t, dir, tickets.srv.URL)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, ok := strings.CutPrefix(string(raw), "actions:\n  tickets.create:\n")
	if !ok {
		t.Fatalf("the tickets actions file changed:\n%s", raw)
	}
	if err := os.WriteFile(path, []byte("actions:\n  tickets.create:\n"+block+"  tickets.create_v2:\n"+block), 0o600); err != nil {
		t.Fatal(err)
	}
	const wide = "tickets.create_v2"

	dataDir := filepath.Join(dir, "data")
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	// The CLI grants a wide name the actions file declares.
	cliBot := mkKey(t, dataDir, "clibot", "agent", wide, "--tenant", "acme", "--actions-file", path)
	addr := freePort(t)
	srv := startReady(t, []string{"TICKETS_TOKEN=" + ticketsToken}, dataDir, addr, "--allow-host", tickets.host, "--actions-file", path)
	goLive(t, addr, root)
	admin := srv.client(root)

	// A key granted the wide name over REST (key_create v2); a malformed
	// name is refused naming the grant, an undeclared one as unknown.
	created, err := admin.CreateKey(t.Context(), client.KeyRequest{Name: "bot", Role: "agent", Tenants: []string{"acme"}, Actions: []string{wide, "tickets.create"}})
	if err != nil {
		t.Fatalf("create a key granted %s: %v", wide, err)
	}
	var ce *client.Error
	if _, err := admin.CreateKey(t.Context(), client.KeyRequest{Name: "bad", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"Tickets.create_v2"}}); !errors.As(err, &ce) ||
		ce.Status != 400 || ce.Code != contract.CodeInvalid || !strings.HasPrefix(ce.Message, `field "/actions/0": `) {
		t.Fatalf("a key granted a malformed name: %v", err)
	}
	if _, err := admin.CreateKey(t.Context(), client.KeyRequest{Name: "bad", Role: "agent", Tenants: []string{"acme"}, Actions: []string{"tickets.delete_v2"}}); err == nil ||
		!strings.Contains(err.Error(), "unknown action type") {
		t.Fatalf("a key granted an undeclared wide name: %v", err)
	}
	agent := srv.client(created.Key)

	// A bad name at propose: 400, invalid_request, the field named.
	for _, bad := range []string{"Tickets.create_v2", "tickets..create", ".tickets.create", "tickets.create.", "tickets", "t." + strings.Repeat("c", 127), "tickets.créer"} {
		_, _, err := agent.Propose(t.Context(), "acme", contract.IntentRequest{Action: bad, Target: "ops", IdempotencyKey: "t-bad"})
		if !errors.As(err, &ce) || ce.Status != 400 || ce.Code != contract.CodeInvalid || !strings.HasPrefix(ce.Message, `field "/action": `) {
			t.Fatalf("propose %q: %v", bad, err)
		}
	}
	// A well-formed wide name nobody declared: unknown_action.
	if _, _, err := agent.Propose(t.Context(), "acme", contract.IntentRequest{Action: "tickets.delete_v2", Target: "ops", IdempotencyKey: "t-unk"}); !errors.As(err, &ce) || ce.Code != contract.CodeUnknownAction {
		t.Fatalf("propose an undeclared wide name: %v", err)
	}

	v, created2, err := agent.Propose(t.Context(), "acme", contract.IntentRequest{Action: wide, Target: "ops",
		Params: map[string]string{"title": "Disk full on db-2"}, IdempotencyKey: "t-v2", Justification: "alert 43"})
	if err != nil || !created2 || v.Intent.SchemaVersion != contract.SchemaVersionV2 || v.Intent.Action != wide || v.Intent.Class != contract.A2 {
		t.Fatalf("propose %s: %+v, %v", wide, v.Intent, err)
	}
	twin, _, err := agent.Propose(t.Context(), "acme", contract.IntentRequest{Action: "tickets.create", Target: "ops",
		Params: map[string]string{"title": "Disk full on db-3"}, IdempotencyKey: "t-v1"})
	if err != nil || twin.Intent.SchemaVersion != contract.SchemaVersion {
		t.Fatalf("propose the V1 twin: %+v, %v", twin.Intent, err)
	}
	// The CLI-made key may propose the wide action too.
	if cv, _, err := srv.client(cliBot).Propose(t.Context(), "acme", contract.IntentRequest{Action: wide, Target: "ops",
		Params: map[string]string{"title": "from the cli key"}, IdempotencyKey: "t-cli"}); err != nil || cv.Intent.SchemaVersion != contract.SchemaVersionV2 {
		t.Fatalf("propose with the CLI key: %+v, %v", cv.Intent, err)
	}

	srv.approveVia(root, "acme", v.Intent.ID)
	out, err := agent.Execute(t.Context(), "acme", v.Intent.ID)
	if err != nil || out.Result.Status != contract.StatusSucceeded || out.Result.SchemaVersion != contract.SchemaVersion {
		t.Fatalf("execute: %+v, %v\n%s", out, err, srv.logs.String())
	}
	if got := tickets.requests(); len(got) != 1 || got[0] != (ticketRequest{"POST", "/tickets/ops", "Bearer " + ticketsToken, `{"title": "Disk full on db-2"}`}) {
		t.Fatalf("the ticket service got %+v", got)
	}

	export := filepath.Join(dir, "acme.jsonl")
	lines := exportVia(t, admin, "acme", export)
	// Every record is a v1 envelope; the intent inside a decision is v2
	// exactly when its action is the wide one.
	seen := map[string]int{}
	for _, line := range lines {
		var rec struct {
			SchemaVersion string `json:"schema_version"`
			Kind          string `json:"kind"`
			Payload       struct {
				Input struct {
					Intent *contract.ActionIntent `json:"intent"`
				} `json:"input"`
				Decision *contract.Decision `json:"decision"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			continue // a checkpoint line
		}
		if rec.SchemaVersion != contract.SchemaVersion {
			t.Errorf("a %s record has schema_version %q", rec.Kind, rec.SchemaVersion)
		}
		if in := rec.Payload.Input.Intent; in != nil {
			want := contract.SchemaVersion
			if in.Action == wide {
				want = contract.SchemaVersionV2
			}
			if in.SchemaVersion != want || rec.Payload.Decision.SchemaVersion != contract.SchemaVersion {
				t.Errorf("%s of %s: intent %s, decision %s", rec.Kind, in.Action, in.SchemaVersion, rec.Payload.Decision.SchemaVersion)
			}
			seen[rec.Kind+" "+in.SchemaVersion]++
		}
	}
	for _, k := range []string{"intent.proposed v2", "intent.proposed v1", "gate.allowed v2"} {
		if seen[k] == 0 {
			t.Errorf("no %s record in the export (%v)", k, seen)
		}
	}
	srv.kill()

	report := filepath.Join(dir, "report.json")
	if code, msg := replayExit(t, "--from-export", export, "--actions-file", path, "--out", report); code != 0 {
		t.Fatalf("replay with the actions file: exit %d\n%s", code, msg)
	}
	var rep contract.ReplayReport
	if b, err := os.ReadFile(report); err != nil || json.Unmarshal(b, &rep) != nil || !rep.Pass || rep.Decisions < 4 || rep.DecisionsMatched != rep.Decisions {
		t.Fatalf("replay report %+v (%v)", rep, err)
	}
	verify := exec.Command(binary(t), "audit", "verify", "--data-dir", dataDir, "--tenant", "acme", "--actions-file", path)
	if vout, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("audit verify --actions-file: %v\n%s", err, vout)
	}
	// The intent as the store holds it: v2, its hash over the version.
	f, err := os.Open(export)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"kind":"intent.proposed"`) && strings.Contains(sc.Text(), `"action":"`+wide+`"`) &&
			!strings.Contains(sc.Text(), `"schema_version":"v2"`) {
			t.Fatalf("an intent.proposed record of %s without a v2 intent:\n%s", wide, sc.Text())
		}
	}
}
