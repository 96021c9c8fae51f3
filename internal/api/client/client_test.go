package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/api/client/clienttest"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

var ctx = context.Background()

// as returns a client of srv authenticated as the fixture's principal name.
func as(t *testing.T, srv *clienttest.Server, name string) *client.Client {
	t.Helper()
	c, err := client.New(srv.URL, client.WithAPIKey(srv.Keys[name]))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// apiErr asserts err is a *client.Error with status and code.
func apiErr(t *testing.T, err error, status int, code string) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want a *client.Error", err, err)
	}
	if e.Status != status || e.Code != code {
		t.Fatalf("error = HTTP %d %q (%v), want HTTP %d %q", e.Status, e.Code, e, status, code)
	}
	if !errors.Is(err, &contract.Error{Code: code}) {
		t.Fatalf("errors.Is(%v, contract code %q) is false", err, code)
	}
	if e.RequestID == "" {
		t.Fatalf("error %v carries no request ID", e)
	}
	return e
}

func TestProposeGetExecute(t *testing.T) {
	srv := clienttest.Start(t)
	agent := as(t, srv, clienttest.Agent)
	req := contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: "k1"}
	v, created, err := agent.Propose(ctx, "acme", req)
	if err != nil || !created || v.Intent.ID == "" || v.Intent.Proposer != srv.IDs[clienttest.Agent] || v.State != gate.StateProposed {
		t.Fatalf("Propose = %+v, %v, %v", v, created, err)
	}
	again, created, err := agent.Propose(ctx, "acme", req)
	if err != nil || created || again.Intent.ID != v.Intent.ID {
		t.Fatalf("Propose again = %s, created %v, %v; want the same intent, not created", again.Intent.ID, created, err)
	}
	got, err := agent.GetIntent(ctx, "acme", v.Intent.ID)
	if err != nil || got.Intent.Hash != v.Intent.Hash {
		t.Fatalf("GetIntent = %+v, %v", got, err)
	}
	out, err := agent.Execute(ctx, "acme", v.Intent.ID)
	if err != nil || out.Duplicate || out.Result.Status != contract.StatusSucceeded || out.Decision.Verdict != contract.Allow || out.Result.Output["target"] != "a.txt" {
		t.Fatalf("Execute = %+v, %v", out, err)
	}
	out, err = agent.Execute(ctx, "acme", v.Intent.ID)
	if err != nil || !out.Duplicate || srv.Runs.Load() != 1 {
		t.Fatalf("Execute again = %+v, %v (runs %d); want the first result, one run", out, err, srv.Runs.Load())
	}
	if got, err := agent.GetIntent(ctx, "acme", v.Intent.ID); err != nil || got.State != gate.StateSucceeded || got.Result == nil {
		t.Fatalf("GetIntent after execute = %+v, %v", got, err)
	}

	// Refusals decode with their status, code and reasons.
	_, err = agent.GetIntent(ctx, "acme", "in_missing")
	apiErr(t, err, 404, contract.CodeNotFound)
	_, _, err = agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.nope", Target: "x", IdempotencyKey: "k2"})
	apiErr(t, err, 400, contract.CodeUnknownAction)
	_, _, err = as(t, srv, clienttest.Reader).Propose(ctx, "acme", contract.IntentRequest{Action: "fs.write", Target: "x", Params: map[string]string{"content": "x"}, IdempotencyKey: "k3"})
	apiErr(t, err, 403, contract.CodeForbidden)
	// Another tenant is not found, never forbidden.
	_, err = as(t, srv, clienttest.BetaAgent).GetIntent(ctx, "acme", v.Intent.ID)
	apiErr(t, err, 404, contract.CodeNotFound)
	// A tenant that is not one is refused before anything is sent.
	if _, err := agent.GetIntent(ctx, "ac/me", v.Intent.ID); err == nil || !strings.Contains(err.Error(), "tenant") {
		t.Fatalf("GetIntent with tenant ac/me = %v", err)
	}
}

func TestApprovals(t *testing.T) {
	srv := clienttest.Start(t)
	agent, op := as(t, srv, clienttest.Agent), as(t, srv, clienttest.Operator)
	write := func(idem string) string {
		v, _, err := agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.write", Target: idem + ".txt", Params: map[string]string{"content": "x"}, IdempotencyKey: idem})
		if err != nil {
			t.Fatal(err)
		}
		return v.Intent.ID
	}
	id, other := write("w1"), write("w2")
	list, err := op.ListApprovals(ctx, "acme", approval.StatusPending)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListApprovals pending = %+v, %v", list, err)
	}
	for _, it := range list {
		if it.Approval.Status != approval.StatusPending || it.Approval.Required != 1 || it.Intent.ID != it.Approval.IntentID || it.Lineage == nil {
			t.Fatalf("approval item %+v", it)
		}
	}
	// Executing before the approval is blocked, with the reasons and the decision.
	_, err = agent.Execute(ctx, "acme", id)
	e := apiErr(t, err, 403, contract.CodeBlocked)
	if len(e.Reasons) == 0 || e.Decision == nil || e.Decision.Verdict != contract.Deny || e.Decision.IntentID != id {
		t.Fatalf("blocked execute: reasons %v, decision %+v", e.Reasons, e.Decision)
	}
	// An agent may not vote.
	_, err = agent.DecideApproval(ctx, "acme", id, contract.ApprovalDecision{Decision: "approve", Reason: "mine"})
	apiErr(t, err, 403, contract.CodeForbidden)
	rec, err := op.DecideApproval(ctx, "acme", id, contract.ApprovalDecision{Decision: "approve", Reason: "reviewed"})
	if err != nil || rec.Status != approval.StatusApproved || len(rec.Approvals) != 1 || rec.Approvals[0].Principal != srv.IDs[clienttest.Operator] {
		t.Fatalf("approve = %+v, %v", rec, err)
	}
	if out, err := agent.Execute(ctx, "acme", id); err != nil || out.Result.Status != contract.StatusSucceeded {
		t.Fatalf("execute after approval = %+v, %v", out, err)
	}
	rec, err = op.DecideApproval(ctx, "acme", other, contract.ApprovalDecision{Decision: "deny", Reason: "no"})
	if err != nil || rec.Status != approval.StatusDenied || rec.Denial == nil {
		t.Fatalf("deny = %+v, %v", rec, err)
	}
	// A denial is final.
	_, err = as(t, srv, clienttest.Operator2).DecideApproval(ctx, "acme", other, contract.ApprovalDecision{Decision: "approve", Reason: "yes"})
	apiErr(t, err, 409, contract.CodeConflict)
	for status, want := range map[string][]string{approval.StatusDenied: {other}, approval.StatusExecuted: {id}, "": {id, other}, approval.StatusPending: nil} {
		list, err := op.ListApprovals(ctx, "acme", status)
		var ids []string
		for _, it := range list {
			ids = append(ids, it.Intent.ID)
		}
		slices.Sort(ids)
		slices.Sort(want)
		if err != nil || !slices.Equal(ids, want) {
			t.Fatalf("ListApprovals %q = %v, %v; want %v", status, ids, err, want)
		}
	}
	_, err = op.ListApprovals(ctx, "acme", "bogus")
	apiErr(t, err, 400, contract.CodeInvalid)
	_, err = op.DecideApproval(ctx, "acme", "in_missing", contract.ApprovalDecision{Decision: "approve", Reason: "x"})
	apiErr(t, err, 404, contract.CodeNotFound)
}

func TestKillSwitch(t *testing.T) {
	srv := clienttest.Start(t)
	admin, op, agent := as(t, srv, clienttest.Admin), as(t, srv, clienttest.Operator), as(t, srv, clienttest.Agent)
	r, err := admin.GetKillSwitch(ctx, "")
	if err != nil || r.Engaged || r.Scope == "" {
		t.Fatalf("GetKillSwitch global = %+v, %v", r, err)
	}
	ch, confirmed, err := admin.SetKillSwitch(ctx, "", contract.KillSwitchRequest{Engaged: true, Reason: "drill"})
	if err != nil || !confirmed || !ch.Current.Engaged || ch.Previous.Engaged || ch.Current.Reason != "drill" || ch.Current.Actor != srv.IDs[clienttest.Admin] {
		t.Fatalf("SetKillSwitch global = %+v, %v, %v", ch, confirmed, err)
	}
	if r, err := admin.GetKillSwitch(ctx, ""); err != nil || !r.Engaged {
		t.Fatalf("GetKillSwitch global after engage = %+v, %v", r, err)
	}
	// The global switch needs the system grant; an operator is forbidden.
	_, _, err = op.SetKillSwitch(ctx, "", contract.KillSwitchRequest{Engaged: false, Reason: "takeover"})
	apiErr(t, err, 403, contract.CodeForbidden)
	_, err = op.GetKillSwitch(ctx, "")
	apiErr(t, err, 403, contract.CodeForbidden)
	if _, _, err := admin.SetKillSwitch(ctx, "", contract.KillSwitchRequest{Engaged: false, Reason: "drill over"}); err != nil {
		t.Fatal(err)
	}

	// The tenant switch: the operator of acme flips it; executions are blocked.
	if _, _, err := op.SetKillSwitch(ctx, "acme", contract.KillSwitchRequest{Engaged: true, Reason: "tenant drill"}); err != nil {
		t.Fatal(err)
	}
	if r, err := op.GetKillSwitch(ctx, "acme"); err != nil || !r.Engaged || r.Reason != "tenant drill" {
		t.Fatalf("GetKillSwitch acme = %+v, %v", r, err)
	}
	v, _, err := agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: "ks"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = agent.Execute(ctx, "acme", v.Intent.ID)
	if e := apiErr(t, err, 403, contract.CodeBlocked); !slices.Contains(e.Reasons, "killswitch_tenant_engaged") {
		t.Fatalf("blocked by the tenant switch: reasons %v", e.Reasons)
	}
	// beta's switch does not exist for acme's operator.
	_, _, err = op.SetKillSwitch(ctx, "beta", contract.KillSwitchRequest{Engaged: true, Reason: "cross"})
	apiErr(t, err, 404, contract.CodeNotFound)
	// A missing reason is the server's 400, decoded.
	_, _, err = op.SetKillSwitch(ctx, "acme", contract.KillSwitchRequest{Engaged: false})
	apiErr(t, err, 400, contract.CodeInvalid)
	// An agent may not flip it.
	_, _, err = agent.SetKillSwitch(ctx, "acme", contract.KillSwitchRequest{Engaged: false, Reason: "let me"})
	apiErr(t, err, 403, contract.CodeForbidden)
}

func TestKeys(t *testing.T) {
	srv := clienttest.Start(t)
	admin := as(t, srv, clienttest.Admin)
	k, err := admin.CreateKey(ctx, client.KeyRequest{Name: "temp", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}, ExpiresIn: 90 * time.Minute})
	if err != nil || k.Key == "" || k.Principal.ID == "" || k.Principal.Role != auth.RoleAgent || k.Principal.ExpiresAt.IsZero() || k.Note == "" {
		t.Fatalf("CreateKey = %+v, %v", k, err)
	}
	temp := admin.With(client.WithAPIKey(k.Key))
	if _, _, err := temp.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: "temp"}); err != nil {
		t.Fatalf("the new key proposes: %v", err)
	}
	list, err := admin.ListKeys(ctx)
	if err != nil || !slices.ContainsFunc(list, func(p auth.Principal) bool { return p.ID == k.Principal.ID }) {
		t.Fatalf("ListKeys = %+v, %v; want %s in it", list, err, k.Principal.ID)
	}
	p, err := admin.RevokeKey(ctx, k.Principal.ID)
	if err != nil || p.ID != k.Principal.ID {
		t.Fatalf("RevokeKey = %+v, %v", p, err)
	}
	_, _, err = temp.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: "temp2"})
	apiErr(t, err, 401, contract.CodeUnauthenticated)
	// Beyond the creator's own grants: forbidden, with the reason.
	_, err = as(t, srv, clienttest.Operator).CreateKey(ctx, client.KeyRequest{Name: "x", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}})
	apiErr(t, err, 403, contract.CodeForbidden)
	_, err = admin.RevokeKey(ctx, "key_0011223344556677")
	apiErr(t, err, 404, contract.CodeNotFound)
	_, err = admin.CreateKey(ctx, client.KeyRequest{Name: "x", Role: "root", Tenants: []string{"acme"}, Actions: []string{"A0"}})
	apiErr(t, err, 400, contract.CodeInvalid)
}

func TestAudit(t *testing.T) {
	srv := clienttest.Start(t)
	agent := as(t, srv, clienttest.Agent)
	for i := range 3 {
		v, _, err := agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: fmt.Sprint("a", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := agent.Execute(ctx, "acme", v.Intent.ID); err != nil {
			t.Fatal(err)
		}
	}
	// The tenant's whole audit: an auditor's (as an operator's or an
	// admin's), with a key an admin creates over the API.
	made, err := as(t, srv, clienttest.Admin).CreateKey(ctx, client.KeyRequest{Name: "aud", Role: auth.RoleAuditor, Tenants: []string{"acme"}, Actions: []string{"A0"}})
	if err != nil || made.Principal.Role != auth.RoleAuditor {
		t.Fatalf("CreateKey auditor = %+v, %v", made, err)
	}
	auditor, err := client.New(srv.URL, client.WithAPIKey(made.Key))
	if err != nil {
		t.Fatal(err)
	}
	var export bytes.Buffer
	n, err := auditor.AuditExport(ctx, "acme", &export)
	if err != nil || n != int64(export.Len()) || n == 0 {
		t.Fatalf("AuditExport = %d, %v (buffer %d)", n, err, export.Len())
	}
	lines := bytes.Split(bytes.TrimSuffix(export.Bytes(), []byte("\n")), []byte("\n"))
	// Page through with a small limit: the pages are the export, byte for
	// byte; an agent's pages are the records of its own intents.
	pages := func(c *client.Client, want string) [][]byte {
		var paged [][]byte
		var after uint64
		for {
			page, err := c.AuditPage(ctx, "acme", after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if page.Tenant != "acme" || len(page.Records) > 2 || page.Scope != want {
				t.Fatalf("page %+v", page)
			}
			recs, err := page.Decode()
			if err != nil || (len(recs) > 0 && recs[len(recs)-1].Seq > page.NextAfter) {
				t.Fatalf("Decode = %+v, %v; next_after %d", recs, err, page.NextAfter)
			}
			for _, r := range page.Records {
				paged = append(paged, r)
			}
			if page.End(after, 2) {
				return paged
			}
			after = page.NextAfter
		}
	}
	if paged := pages(auditor, "tenant"); !slices.EqualFunc(paged, lines, bytes.Equal) {
		t.Fatalf("paged records (%d) differ from the export (%d)", len(paged), len(lines))
	}
	var own [][]byte
	for _, l := range lines {
		if bytes.Contains(l, []byte(`"correlation_id":"in_`)) {
			own = append(own, l) // every intent here is the agent's
		}
	}
	if paged := pages(agent, "own"); len(own) == 0 || !slices.EqualFunc(paged, own, bytes.Equal) {
		t.Fatalf("the agent's pages (%d records) are not the records of its intents (%d)", len(paged), len(own))
	}
	// One intent's records, a page of 2 at a time.
	first, _ := agent.AuditPage(ctx, "acme", 0, 1000)
	recs, _ := first.Decode()
	id := recs[0].CorrelationID
	var ofIntent int
	for after := uint64(0); ; {
		page, err := agent.IntentAuditPage(ctx, "acme", id, after, 2)
		if err != nil || page.Intent != id {
			t.Fatalf("IntentAuditPage = %+v, %v", page, err)
		}
		rs, _ := page.Decode()
		for _, r := range rs {
			if r.CorrelationID != id {
				t.Fatalf("IntentAuditPage holds a record of %s", r.CorrelationID)
			}
		}
		ofIntent += len(rs)
		if len(rs) < 2 {
			break
		}
		after = page.NextAfter
	}
	if want := bytes.Count(export.Bytes(), []byte(`"correlation_id":"`+id+`"`)); ofIntent != want || want == 0 {
		t.Fatalf("IntentAuditPage paged %d records of %s, the export holds %d", ofIntent, id, want)
	}
	rep, err := auditor.AuditVerify(ctx, "acme")
	if err != nil || !rep.Pass || rep.Records != uint64(len(lines)) || rep.Decisions == 0 {
		t.Fatalf("AuditVerify = %+v, %v", rep, err)
	}
	_, err = agent.AuditVerify(ctx, "acme")
	apiErr(t, err, 403, contract.CodeForbidden)
	_, err = agent.AuditExport(ctx, "acme", io.Discard)
	apiErr(t, err, 403, contract.CodeForbidden)
	_, err = agent.AuditPage(ctx, "acme", 0, 5000)
	apiErr(t, err, 400, contract.CodeInvalid)
	_, err = as(t, srv, clienttest.BetaAgent).AuditExport(ctx, "acme", io.Discard)
	apiErr(t, err, 404, contract.CodeNotFound)
}

func TestInDoubtAndResolve(t *testing.T) {
	srv := clienttest.Start(t)
	agent, op := as(t, srv, clienttest.Agent), as(t, srv, clienttest.Operator)
	if list, err := op.ListInDoubt(ctx, "acme"); err != nil || len(list) != 0 {
		t.Fatalf("ListInDoubt on a fresh store = %+v, %v", list, err)
	}
	v, _, err := agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.write", Target: clienttest.HangTarget, Params: map[string]string{"content": "x"}, IdempotencyKey: "hang"})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing started: resolve is a conflict.
	_, err = op.Resolve(ctx, "acme", v.Intent.ID, client.ResolveRequest{Outcome: contract.StatusFailed, Reason: "x"})
	apiErr(t, err, 409, contract.CodeConflict)
	if _, err := op.DecideApproval(ctx, "acme", v.Intent.ID, contract.ApprovalDecision{Decision: "approve", Reason: "ok"}); err != nil {
		t.Fatal(err)
	}
	// The executor overruns its deadline: in doubt.
	_, err = agent.Execute(ctx, "acme", v.Intent.ID)
	apiErr(t, err, 409, contract.CodeInDoubt)
	var list []gate.InDoubt
	for deadline := time.Now().Add(10 * time.Second); len(list) == 0; time.Sleep(50 * time.Millisecond) {
		if list, err = op.ListInDoubt(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the execution never read in doubt")
		}
	}
	if list[0].IntentID != v.Intent.ID || list[0].IdempotencyKey != "hang" || list[0].StartedAt.IsZero() {
		t.Fatalf("ListInDoubt = %+v", list)
	}
	// Agents may not resolve.
	_, err = agent.Resolve(ctx, "acme", v.Intent.ID, client.ResolveRequest{Outcome: contract.StatusFailed, Reason: "x"})
	apiErr(t, err, 403, contract.CodeForbidden)
	res, err := op.Resolve(ctx, "acme", v.Intent.ID, client.ResolveRequest{Outcome: contract.StatusFailed, Reason: "the target shows nothing"})
	if err != nil || res.Status != contract.StatusFailed || res.IntentID != v.Intent.ID {
		t.Fatalf("Resolve = %+v, %v", res, err)
	}
	_, err = op.Resolve(ctx, "acme", v.Intent.ID, client.ResolveRequest{Outcome: contract.StatusFailed, Reason: "again"})
	apiErr(t, err, 409, contract.CodeConflict)
}

func TestHealthReadyMetricsAndAuthentication(t *testing.T) {
	srv := clienttest.Start(t)
	anon, err := client.New(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	if err := anon.Health(ctx); err != nil {
		t.Fatalf("Health = %v", err)
	}
	if err := anon.Ready(ctx); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	_, err = anon.Metrics(ctx)
	apiErr(t, err, 401, contract.CodeUnauthenticated)
	_, err = anon.With(client.WithAPIKey("exo_not_a_key")).GetKillSwitch(ctx, "acme")
	e := apiErr(t, err, 401, contract.CodeUnauthenticated)
	if !strings.Contains(e.Error(), "GET /v1/tenants/acme/killswitch: HTTP 401 unauthenticated") {
		t.Fatalf("error text %q", e.Error())
	}
	m, err := as(t, srv, clienttest.Admin).Metrics(ctx)
	if err != nil || !bytes.Contains(m, []byte("# TYPE")) {
		t.Fatalf("Metrics = %.200q, %v", m, err)
	}
	_, err = as(t, srv, clienttest.Operator).Metrics(ctx)
	apiErr(t, err, 403, contract.CodeForbidden)
}

func TestNewRejectsBadServerURLs(t *testing.T) {
	for _, u := range []string{"127.0.0.1:8080", "ftp://h", "http://", "http://u:p@h", "http://h/?x=1", "::"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetKillSwitch(ctx, "")
	if !errors.Is(err, client.ErrUnreachable) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "--server") ||
		!strings.Contains(err.Error(), "exoarmur serve") {
		t.Fatalf("connection refused: %v", err)
	}
	var e *client.Error
	if errors.As(err, &e) {
		t.Fatalf("an unreachable server is not an HTTP error: %v", err)
	}
}

// fake serves h for tests of what no real server sends.
func fake(t *testing.T, h http.HandlerFunc) *client.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithAPIKey("k"), client.WithUserAgent("test-agent/1"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHeadersAndForeignErrorBodies(t *testing.T) {
	var seen http.Header
	c := fake(t, func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		w.Header().Set("X-Request-Id", "req_proxy")
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	})
	err := c.Health(ctx)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 502 || e.Code != "" || !strings.Contains(e.Message, "bad gateway") || e.RequestID != "req_proxy" {
		t.Fatalf("a proxy's 502 = %#v", err)
	}
	if seen.Get("Authorization") != "Bearer k" || seen.Get("User-Agent") != "test-agent/1" {
		t.Fatalf("headers sent: %v", seen)
	}
	if errors.Is(err, &contract.Error{Code: contract.CodeInternal}) {
		t.Fatal("a foreign error body matched a contract code")
	}
}

func TestBoundedResponses(t *testing.T) {
	t.Run("json over the limit", func(t *testing.T) {
		c := fake(t, func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"keys":["`))
			w.Write(bytes.Repeat([]byte("x"), client.MaxResponse))
			w.Write([]byte(`"]}`))
		})
		if _, err := c.ListKeys(ctx); err == nil || !strings.Contains(err.Error(), "exceeds") {
			t.Fatalf("ListKeys of a %d MiB body = %v", client.MaxResponse>>20, err)
		}
	})
	t.Run("json that is not json", func(t *testing.T) {
		c := fake(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"state":`)) })
		if _, err := c.GetKillSwitch(ctx, ""); err == nil || !strings.Contains(err.Error(), "not the expected JSON") {
			t.Fatalf("GetKillSwitch of a cut body = %v", err)
		}
	})
	t.Run("export over the limit", func(t *testing.T) {
		line := append(bytes.Repeat([]byte("x"), 1<<20-1), '\n')
		c := fake(t, func(w http.ResponseWriter, r *http.Request) {
			for range client.MaxExport>>20 + 1 {
				w.Write(line)
			}
		})
		var buf bytes.Buffer
		n, err := c.AuditExport(ctx, "acme", &buf)
		if err == nil || !strings.Contains(err.Error(), "exceeds") || n != int64(buf.Len()) || n != client.MaxExport {
			t.Fatalf("AuditExport over the limit = %d, %v (buffer %d)", n, err, buf.Len())
		}
		if !bytes.HasSuffix(buf.Bytes(), []byte("\n")) {
			t.Fatal("a partial record was written")
		}
	})
	t.Run("export cut inside a record", func(t *testing.T) {
		c := fake(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{\"seq\":1}\n{\"seq\":")) })
		var buf bytes.Buffer
		if _, err := c.AuditExport(ctx, "acme", &buf); err == nil || !strings.Contains(err.Error(), "cut short") || buf.String() != "{\"seq\":1}\n" {
			t.Fatalf("AuditExport of a cut export = %v, wrote %q", err, buf.String())
		}
	})
}

// TestListIntentsAndOpenAPI: the listing pages through a tenant's intents
// with their states, a bad query is a 400 naming the parameter, another
// tenant sees none; /openapi.yaml is byte for byte the contract file.
func TestListIntentsAndOpenAPI(t *testing.T) {
	srv := clienttest.Start(t)
	agent := as(t, srv, clienttest.Agent)
	var ids []string
	for _, k := range []string{"l1", "l2", "l3"} {
		v, _, err := agent.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: k + ".txt", IdempotencyKey: k})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.Intent.ID)
	}
	if _, err := agent.Execute(ctx, "acme", ids[1]); err != nil {
		t.Fatal(err)
	}
	p1, err := agent.ListIntents(ctx, "acme", client.ListQuery{Limit: 2})
	if err != nil || len(p1.Intents) != 2 || p1.Next == "" || p1.Intents[0].Intent.ID != ids[0] {
		t.Fatalf("page 1 = %+v, %v", p1, err)
	}
	p2, err := agent.ListIntents(ctx, "acme", client.ListQuery{Limit: 2, After: p1.Next})
	if err != nil || len(p2.Intents) != 1 || p2.Next != "" || p2.Intents[0].Intent.ID != ids[2] {
		t.Fatalf("page 2 = %+v, %v", p2, err)
	}
	done, err := agent.ListIntents(ctx, "acme", client.ListQuery{State: gate.StateSucceeded})
	if err != nil || len(done.Intents) != 1 || done.Intents[0].Intent.ID != ids[1] || done.Intents[0].Result == nil {
		t.Fatalf("succeeded = %+v, %v", done, err)
	}
	_, err = agent.ListIntents(ctx, "acme", client.ListQuery{State: "running"})
	apiErr(t, err, 400, contract.CodeInvalid)
	_, err = as(t, srv, clienttest.BetaAgent).ListIntents(ctx, "acme", client.ListQuery{})
	apiErr(t, err, 404, contract.CodeNotFound)
	if beta, err := as(t, srv, clienttest.BetaAgent).ListIntents(ctx, "beta", client.ListQuery{}); err != nil || len(beta.Intents) != 0 {
		t.Fatalf("beta's own listing = %+v, %v", beta, err)
	}

	got, err := agent.OpenAPI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../../contracts/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("GET /openapi.yaml (%d bytes) differs from contracts/openapi.yaml (%d bytes)", len(got), len(want))
	}
}
