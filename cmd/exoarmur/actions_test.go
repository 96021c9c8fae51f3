package main_test

import (
	"bytes"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// ticketService is a loopback ticket tracker: it records each request's
// Authorization header and body.
type ticketService struct {
	mu   sync.Mutex
	got  []ticketRequest
	srv  *httptest.Server
	host string
}

type ticketRequest struct{ method, path, auth, body string }

func newTicketService(t *testing.T) *ticketService {
	ts := &ticketService{}
	ts.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ts.mu.Lock()
		ts.got = append(ts.got, ticketRequest{r.Method, r.URL.Path, r.Header.Get("Authorization"), string(b)})
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		// A careless service echoing the credential back: the output must not hold it.
		io.WriteString(w, `{"id": "T-1", "seen_auth": "`+r.Header.Get("Authorization")+`"}`)
	}))
	t.Cleanup(ts.srv.Close)
	ts.host = strings.TrimPrefix(ts.srv.URL, "http://")
	return ts
}

func (ts *ticketService) requests() []ticketRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]ticketRequest(nil), ts.got...)
}

const ticketsToken = "tkt_Zx9-secret-bearer-e2e"

// writeTicketsActions writes the cookbook's actions file (tickets.create,
// A2, a POST to serviceURL/tickets/TARGET with the bearer secret from
// TICKETS_TOKEN) into dir and returns its path.
func writeTicketsActions(t *testing.T, dir, serviceURL string) string {
	t.Helper()
	path := filepath.Join(dir, "actions.yaml")
	if err := os.WriteFile(path, []byte(`actions:
  tickets.create:
    class: A2
    description: Create a ticket in the team tracker
    params:
      type: object
      required: [title]
      additionalProperties: false
      properties:
        title: {type: string, maxLength: 1000}
        body:  {type: string}
    http:
      method: POST
      url: "`+serviceURL+`/tickets/{{path .target}}"
      headers:
        Authorization: "Bearer {{secret \"TICKETS_TOKEN\"}}"
        Content-Type: application/json
      body: '{"title": {{json .params.title}}}'
    secrets:
      TICKETS_TOKEN: {env: TICKETS_TOKEN}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDeclaredActionEndToEnd: serve with an actions file declaring
// tickets.create (A2, a POST to a loopback ticket service with a bearer
// secret from an environment variable set for the server process only);
// an agent proposes, an operator approves, the agent executes; the ticket
// service receives the bearer secret and the title. The secret's bytes
// are then nowhere else: not in the data dir, the server's logs, the
// output, an audit export or a replay report. Replay with the actions file
// re-decides the declared action; without it, it fails loudly.
func TestDeclaredActionEndToEnd(t *testing.T) {
	tickets := newTicketService(t)
	dir := t.TempDir()
	actionsPath := writeTicketsActions(t, dir, tickets.srv.URL)

	// check-config: good with the secret set, refused by name without it.
	cc := exec.Command(binary(t), "check-config", "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0", "--actions-file", actionsPath)
	cc.Env = append(os.Environ(), "TICKETS_TOKEN="+ticketsToken)
	if out, err := cc.CombinedOutput(); err != nil || !strings.Contains(string(out), "1 declared actions (tickets.create)") {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	cc = exec.Command(binary(t), "check-config", "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0", "--actions-file", actionsPath)
	cc.Env = append(os.Environ(), "TICKETS_TOKEN=")
	if out, err := cc.CombinedOutput(); err == nil || !strings.Contains(string(out), "secrets.TICKETS_TOKEN: environment variable TICKETS_TOKEN is empty") {
		t.Fatalf("check-config without the secret: %v\n%s", err, out)
	}

	dataDir := filepath.Join(dir, "data")
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	bot := mkKey(t, dataDir, "bot", "agent", "A2", "--tenant", "acme")
	addr := freePort(t)
	// A server without its secret refuses to start, naming it.
	if out, err := exec.Command(binary(t), "serve", "--data-dir", dataDir, "--listen", addr, "--actions-file", actionsPath).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "environment variable TICKETS_TOKEN is not set") {
		t.Fatalf("serve without the secret: %v\n%s", err, out)
	}
	srv := startReady(t, []string{"TICKETS_TOKEN=" + ticketsToken}, dataDir, addr, "--allow-host", tickets.host, "--actions-file", actionsPath)
	goLive(t, addr, root)
	agent := srv.client(bot)

	// Params outside the schema are refused at propose, naming the field.
	if _, _, err := agent.Propose(t.Context(), "acme", contract.IntentRequest{Action: "tickets.create", Target: "ops",
		Params: map[string]string{"title": strings.Repeat("x", 1001)}, IdempotencyKey: "t-bad"}); err == nil || !strings.Contains(err.Error(), `field "/params/title"`) {
		t.Fatalf("propose with a title over the schema: %v", err)
	}
	v, created, err := agent.Propose(t.Context(), "acme", contract.IntentRequest{Action: "tickets.create", Target: "ops",
		Params: map[string]string{"title": "Disk full on db-1"}, IdempotencyKey: "t-1", Justification: "alert 42"})
	if err != nil || !created || v.Intent.Class != contract.A2 {
		t.Fatalf("propose: %+v, %v", v, err)
	}
	// The operator sees the request exactly as it will be sent, the
	// secret as its placeholder.
	seen, err := srv.client(root).GetIntent(t.Context(), "acme", v.Intent.ID)
	if err != nil || seen.Request == nil || seen.Request.URL != tickets.srv.URL+"/tickets/ops" || seen.Request.Body != `{"title": "Disk full on db-1"}` ||
		seen.Request.Header[0] != (action.Header{Name: "Authorization", Value: "Bearer <secret:TICKETS_TOKEN>"}) {
		t.Fatalf("the intent shows the request %+v (%v)", seen.Request, err)
	}
	srv.approveVia(root, "acme", v.Intent.ID)
	out, err := agent.Execute(t.Context(), "acme", v.Intent.ID)
	if err != nil || out.Result.Status != contract.StatusSucceeded {
		t.Fatalf("execute: %+v, %v\n%s", out, err, srv.logs.String())
	}
	got := tickets.requests()
	if len(got) != 1 || got[0] != (ticketRequest{"POST", "/tickets/ops", "Bearer " + ticketsToken, `{"title": "Disk full on db-1"}`}) {
		t.Fatalf("the ticket service got %+v", got)
	}
	if body := out.Result.Output["body"]; body != `{"id": "T-1", "seen_auth": "Bearer <secret:TICKETS_TOKEN>"}` || out.Result.Output["status"] != "201" {
		t.Fatalf("output %v: the echoed secret must be redacted", out.Result.Output)
	}

	export := filepath.Join(dir, "acme.jsonl")
	exportVia(t, srv.client(root), "acme", export) // the admin reads the tenant's whole audit
	srv.kill()

	// Replay outside the server: with the actions file it re-decides the
	// declared action; without it, the decisions of an unknown type fail.
	report := filepath.Join(dir, "report.json")
	if code, msg := replayExit(t, "--from-export", export, "--actions-file", actionsPath, "--out", report); code != 0 {
		t.Fatalf("replay with the actions file: exit %d\n%s", code, msg)
	}
	if code, msg := replayExit(t, "--from-export", export); code != 1 || !strings.Contains(msg, "action_unknown") {
		t.Fatalf("replay without the actions file: exit %d\n%s", code, msg)
	}
	verify := exec.Command(binary(t), "audit", "verify", "--data-dir", dataDir, "--tenant", "acme", "--actions-file", actionsPath)
	if vout, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("audit verify --actions-file: %v\n%s", err, vout)
	}

	// The secret's bytes: only at the ticket service.
	secret := []byte(ticketsToken)
	if bytes.Contains([]byte(srv.logs.String()), secret) {
		t.Fatal("the server's logs hold the secret")
	}
	for _, f := range []string{export, report} {
		if b, _ := os.ReadFile(f); bytes.Contains(b, secret) || len(b) == 0 {
			t.Fatalf("%s holds the secret (or is empty)", f)
		}
	}
	files := 0
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, secret) {
			t.Errorf("%s holds the secret", path)
		}
		return nil
	})
	if err != nil || files < 5 {
		t.Fatalf("walk the data dir: %v (%d files)", err, files)
	}
}
