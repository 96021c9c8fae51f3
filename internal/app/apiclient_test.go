package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/api/client/clienttest"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// cli runs the exoarmur command with key and returns its exit code,
// stdout and stderr.
func cli(t *testing.T, key string, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("EXOARMUR_API_KEY", key)
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, Env{Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

func TestKillSwitchCommand(t *testing.T) {
	srv := clienttest.Start(t)
	admin, op := srv.Keys[clienttest.Admin], srv.Keys[clienttest.Operator]
	code, out, stderr := cli(t, admin, "killswitch", "engage", "--reason", "drill", "--json", "--server", srv.URL)
	var ch struct {
		Previous, Current struct {
			Scope   string `json:"scope"`
			Engaged bool   `json:"engaged"`
			Reason  string `json:"reason"`
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &ch) != nil || !ch.Current.Engaged || ch.Previous.Engaged || ch.Current.Reason != "drill" || strings.Count(out, "\n") != 1 {
		t.Fatalf("killswitch engage: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, admin, "killswitch", "status", "--json", "--server", srv.URL+"/")
	if code != 0 || !strings.HasPrefix(out, `{"state":{`) || !strings.Contains(out, `"engaged":true`) {
		t.Fatalf("killswitch status --json: exit %d\n%s%s", code, out, stderr)
	}
	// For a person: a table of the switch, a line for a change.
	code, out, stderr = cli(t, admin, "killswitch", "status", "--server", srv.URL)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "SCOPE STATE SINCE BY REASON FRESH" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "global engaged 20") || !strings.Contains(lines[1], " drill ") || !strings.HasSuffix(lines[1], " yes") {
		t.Fatalf("killswitch status: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, op, "killswitch", "status", "--tenant", "beta2", "--server", srv.URL)
	if code != 1 || !strings.Contains(stderr, "HTTP 404") {
		t.Fatalf("killswitch status of another tenant: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, op, "killswitch", "disengage", "--tenant", "acme", "--reason", "go", "--json", "--server", srv.URL)
	if code != 0 || !strings.Contains(out, `"current":{"scope":"acme","engaged":false`) {
		t.Fatalf("killswitch disengage --tenant acme --json: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, op, "killswitch", "engage", "--tenant", "acme", "--reason", "again", "--server", srv.URL)
	if code != 0 || !strings.HasPrefix(out, "kill switch of tenant acme engaged (was disengaged): applied by 1 live node(s) (") || strings.Count(out, "\n") != 1 {
		t.Fatalf("killswitch engage --tenant acme: exit %d\n%s%s", code, out, stderr)
	}
	// Refusals: exit 1, the status, code and message on stderr, nothing on stdout.
	code, out, stderr = cli(t, op, "killswitch", "engage", "--tenant", "beta", "--reason", "cross", "--server", srv.URL)
	if code != 1 || out != "" || !strings.Contains(stderr, "HTTP 404 not_found") {
		t.Fatalf("cross-tenant killswitch: exit %d\n%s%s", code, out, stderr)
	}
	code, _, stderr = cli(t, op, "killswitch", "disengage", "--reason", "takeover", "--server", srv.URL)
	if code != 1 || !strings.Contains(stderr, "PUT /v1/killswitch: HTTP 403 forbidden") || !strings.Contains(stderr, "[request req_") {
		t.Fatalf("operator on the global switch: exit %d\n%s", code, stderr)
	}
	for _, args := range [][]string{
		{"killswitch", "engage", "--server", srv.URL},                      // no reason
		{"killswitch", "status", "--tenant", "Ac.me", "--server", srv.URL}, // bad tenant
		{"killswitch", "status", "--server", "127.0.0.1:8080"},             // not a URL
		{"killswitch", "flip"},                                             // no such subcommand
		{"killswitch", "status", "--server", srv.URL, "extra"},             // stray argument
	} {
		if code, _, stderr := cli(t, admin, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", args, code, stderr)
		}
	}
	if code, _, stderr := cli(t, "", "killswitch", "status", "--server", srv.URL); code != 2 || !strings.Contains(stderr, "EXOARMUR_API_KEY") {
		t.Fatalf("without a key: exit %d\n%s", code, stderr)
	}
}

// TestCellQuotesControls: a table cell holding a control character (a
// tab or newline would forge columns or rows) is quoted.
func TestCellQuotesControls(t *testing.T) {
	for in, want := range map[string]string{"": "-", "a.txt": "a.txt", "a b": "a b", "b.txt\nin_forged": `"b.txt\nin_forged"`, "a\tb": `"a\tb"`, "a\u0085b": `"a\u0085b"`} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestApprovalCommands(t *testing.T) {
	srv := clienttest.Start(t)
	agent, err := client.New(srv.URL, client.WithAPIKey(srv.Keys[clienttest.Agent]))
	if err != nil {
		t.Fatal(err)
	}
	propose := func(idem, target string) string {
		v, _, err := agent.Propose(context.Background(), "acme", contract.IntentRequest{Action: "fs.write", Target: target, Params: map[string]string{"content": "x"}, IdempotencyKey: idem})
		if err != nil {
			t.Fatal(err)
		}
		return v.Intent.ID
	}
	id := propose("w1", "notes/a.txt")
	// A target that would forge a row of the table is refused at propose
	// (issue 16); cell still quotes one stored before (TestCellQuotesControls).
	if _, _, err := agent.Propose(context.Background(), "acme", contract.IntentRequest{Action: "fs.write", Target: "b.txt\nin_forged  fs.write",
		Params: map[string]string{"content": "x"}, IdempotencyKey: "w2"}); err == nil || !strings.Contains(err.Error(), "hidden_character") {
		t.Fatalf("a target with a newline: %v, want refused (hidden_character)", err)
	}
	forged := propose("w2", "b.txt  in_forged  fs.write")
	op := srv.Keys[clienttest.Operator]

	code, out, stderr := cli(t, op, "approvals", "list", "--tenant", "acme", "--server", srv.URL)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "INTENT ACTION CLASS STATUS VOTES EXPIRES PROPOSER TARGET" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), id+" fs.write A1 pending 0/1 20") || !strings.Contains(out, "0/1") ||
		!strings.Contains(out, "b.txt  in_forged  fs.write") {
		t.Fatalf("approvals list: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, op, "approvals", "list", "--tenant", "acme", "--json", "--server", srv.URL)
	var body struct {
		Tenant    string                `json:"tenant"`
		Approvals []client.ApprovalItem `json:"approvals"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &body) != nil || body.Tenant != "acme" || len(body.Approvals) != 2 {
		t.Fatalf("approvals list --json: exit %d\n%s%s", code, out, stderr)
	}

	// The proposer cannot vote; the refusal says so on stderr with the status.
	code, out, stderr = cli(t, srv.Keys[clienttest.Agent], "approve", id, "--tenant", "acme", "--reason", "mine", "--server", srv.URL)
	if code != 1 || out != "" || !strings.Contains(stderr, "HTTP 403") {
		t.Fatalf("approve by an agent: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, op, "approve", id, "--tenant", "acme", "--reason", "reviewed", "--json", "--server", srv.URL)
	if code != 0 || !strings.Contains(out, `"status":"approved"`) || !strings.Contains(out, `"intent_id":"`+id+`"`) {
		t.Fatalf("approve --json: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, op, "deny", forged, "--tenant", "acme", "--reason", "no", "--server", srv.URL)
	if code != 0 || !strings.HasPrefix(out, "denied "+forged+" in tenant acme: fs.write (A1) proposed by key_") || !strings.Contains(out, "; 0/1 approvals, status denied, expires 20") ||
		strings.Count(out, "\n") != 1 {
		t.Fatalf("deny: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = cli(t, op, "approve", forged, "--tenant", "acme", "--reason", "late", "--server", srv.URL)
	if code != 1 || !strings.Contains(stderr, "HTTP 409 conflict") {
		t.Fatalf("approve after a denial: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = cli(t, op, "approvals", "list", "--tenant", "acme", "--server", srv.URL)
	if code != 0 || out != "no pending approvals in tenant acme\n" {
		t.Fatalf("empty queue: exit %d\n%s", code, out)
	}
	code, _, stderr = cli(t, op, "approvals", "list", "--tenant", "acme", "--status", "bogus", "--server", srv.URL)
	if code != 1 || !strings.Contains(stderr, "HTTP 400 invalid_request") {
		t.Fatalf("bad status: exit %d\n%s", code, stderr)
	}
	for _, args := range [][]string{
		{"approve", id, "--tenant", "acme", "--server", srv.URL},                   // no reason
		{"approve", id, "--reason", "x", "--server", srv.URL},                      // no tenant
		{"deny", "../x", "--tenant", "acme", "--reason", "x", "--server", srv.URL}, // not an intent ID
		{"approvals", "list", "--server", srv.URL},                                 // no tenant
		{"approvals", "show"},
	} {
		if code, _, stderr := cli(t, op, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", args, code, stderr)
		}
	}
}

// TestAPICommandsServer: every API command calls --server, else
// EXOARMUR_SERVER, else the default; a server that refuses the connection
// gives an error naming the server tried, where it came from, and both
// ways to set it.
func TestAPICommandsServer(t *testing.T) {
	srv := clienttest.Start(t)
	live, srvKey := srv.URL, srv.Keys[clienttest.Admin]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	commands := [][]string{
		{"killswitch", "status"},
		{"killswitch", "engage", "--tenant", "acme", "--reason", "x"},
		{"killswitch", "disengage", "--tenant", "acme", "--reason", "x"},
		{"approvals", "list", "--tenant", "acme"},
		{"approve", "in_x", "--tenant", "acme", "--reason", "x"},
		{"deny", "in_x", "--tenant", "acme", "--reason", "x"},
		{"keys", "consent", "key_x", "--reason", "x"},
	}
	for _, c := range []struct {
		name       string
		env, flag  string
		reach      bool   // the live server answers
		tried, how string // else: the error names the server tried and how it was chosen
	}{
		{"--server", "", closed, false, closed, "given by --server"},
		{"EXOARMUR_SERVER", closed, "", false, closed, "given by EXOARMUR_SERVER"},
		{"EXOARMUR_SERVER live", live, "", true, "", ""},
		{"--server wins over a dead EXOARMUR_SERVER", closed, live, true, "", ""},
		{"--server wins over a live EXOARMUR_SERVER", live, closed, false, closed, "given by --server"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("EXOARMUR_SERVER", c.env)
			for _, args := range commands {
				if c.flag != "" {
					args = append(slices.Clone(args), "--server", c.flag)
				}
				code, out, stderr := cli(t, srvKey, args...)
				if c.reach {
					// The server answered: success, or its refusal (an HTTP status).
					if strings.Contains(stderr, "cannot reach") || (code != 0 && !strings.Contains(stderr, "HTTP 4")) {
						t.Errorf("%v: exit %d\n%s%s", args, code, out, stderr)
					}
					continue
				}
				if code != 1 || out != "" || !strings.Contains(stderr, "cannot reach the ExoArmur server at "+c.tried+" ("+c.how+")") ||
					!strings.Contains(stderr, "connection refused") || !strings.Contains(stderr, "--server URL or EXOARMUR_SERVER=URL") ||
					!strings.Contains(stderr, "exoarmur serve") {
					t.Errorf("%v: exit %d\n%s%s", args, code, out, stderr)
				}
			}
		})
	}
	// Without either, the default, and the error says so.
	t.Setenv("EXOARMUR_SERVER", "")
	var af apiFlags
	if url, from := af.serverURL(); url != "http://127.0.0.1:8080" || from != "" {
		t.Fatalf("default server: %q from %q", url, from)
	}
	msg := af.explain(fmt.Errorf("GET /v1/killswitch: %w", client.ErrUnreachable)).Error()
	if !strings.Contains(msg, "at http://127.0.0.1:8080 (the default: neither --server nor EXOARMUR_SERVER is set)") {
		t.Fatalf("unreachable default: %s", msg)
	}
	if err := errors.New("HTTP 403"); af.explain(err) != err {
		t.Fatal("explain changed an error that is not ErrUnreachable")
	}
	// A URL that is not one names where it came from (exit 2).
	t.Setenv("EXOARMUR_SERVER", "127.0.0.1:8080")
	if code, _, stderr := cli(t, srvKey, "killswitch", "status"); code != 2 || !strings.Contains(stderr, "EXOARMUR_SERVER: ") {
		t.Fatalf("EXOARMUR_SERVER not a URL: exit %d\n%s", code, stderr)
	}
}
