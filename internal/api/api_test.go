package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/approval"
	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/checkpoint"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/killswitch"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/policy/active"
	"github.com/exoarmur/exoarmur/internal/policy/archive"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// keys is a fixed key table that counts lookups, so tests can show that a
// request was refused before any credential (store) access.
type keys struct {
	lookups atomic.Int64
	table   map[string]*auth.Principal
}

func (k *keys) Authenticate(_ context.Context, key string) (*auth.Principal, error) {
	k.lookups.Add(1)
	switch key {
	case expiredKey:
		return nil, auth.ErrExpired
	case revokedKey:
		return nil, auth.ErrUnauthenticated
	}
	if p, ok := k.table[key]; ok {
		return p, nil
	}
	return nil, auth.ErrUnauthenticated
}

type okExec struct {
	mu   sync.Mutex
	runs int
}

func (e *okExec) Lookup(string) (gate.Executor, bool) { return e, true }
func (e *okExec) Run(_ context.Context, p *gate.Permit) (map[string]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runs++
	if reply := p.Intent().Params["reply"]; reply != "" {
		// What a read or an http call brought back: only its proposer and
		// the tenant's overseers may see it.
		return map[string]string{"target": p.Intent().Target, "content": reply}, nil
	}
	return map[string]string{"target": p.Intent().Target}, nil
}

type fixture struct {
	log  *audit.Log
	st   *natsstore.Store
	srv  *httptest.Server
	keys *keys
	exec *okExec
	// handler is the API handler itself, for tests that serve it with the
	// production http.Server settings (api.NewHTTPServer).
	handler http.Handler
	acc     *access.Service
	cfg     api.Config // the handler's configuration, for tests that serve a variant
}

const (
	agentKey  = "exo_agent"
	readerKey = "exo_reader"
	otherKey  = "exo_other"
	opKey     = "exo_operator"
	adminKey  = "exo_admin"
	betaOpKey = "exo_beta_operator"
	// An agent granted only fs.read, and an auditor, of acme.
	fsReadKey  = "exo_fsread"
	auditorKey = "exo_auditor"
	// Stand-ins for keys the registry reports expired or revoked (the real
	// registry's behaviour is tested in internal/auth).
	expiredKey = "exo_expired"
	revokedKey = "exo_revoked"
)

func newFixture(t *testing.T, opts ...func(*access.Config)) *fixture {
	t.Helper()
	st, err := natsstore.Open(context.Background(), natsstore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := audit.New(st.Audit)
	ex := &okExec{}
	validator, err := policy.NewValidator(action.Builtin().PolicyTypes())
	if err != nil {
		t.Fatal(err)
	}
	policies, err := active.New(active.Config{Base: policy.Default(), Validator: validator, Archive: archive.New(st.Policies), Control: st.Control, Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := killswitch.Start(context.Background(), killswitch.Config{Control: st.Control, Peers: st.Bus, Audit: log, Node: "test", Others: policies})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Stop)
	policies.Attach(sw)
	for _, scope := range []tenant.ID{tenant.System, tenant.MustParse("acme"), tenant.MustParse("beta")} {
		if _, err := sw.Set(context.Background(), scope, killswitch.Flip{Engaged: false, Reason: "test setup", Actor: "key_setup", RequestID: ""}); err != nil {
			t.Fatal(err)
		}
	}
	approvals := approval.NewStore(st.Approvals, log, nil, nil)
	now := func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	g, err := gate.New(gate.Config{Intents: st.Intents, Idempotency: st.Idempotency, Audit: log, Executors: ex, Switches: sw,
		Approvals: approvals, Work: st.Work, Now: now, Policies: policies})
	if err != nil {
		t.Fatal(err)
	}
	k := &keys{table: map[string]*auth.Principal{
		agentKey:   {ID: "key_agent", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"*"}},
		readerKey:  {ID: "key_reader", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"A0"}},
		otherKey:   {ID: "key_other", Role: auth.RoleAgent, Tenants: []string{"beta"}, Actions: []string{"*"}},
		opKey:      {ID: "key_op", Role: auth.RoleOperator, Tenants: []string{"acme"}, Actions: []string{"*"}},
		adminKey:   {ID: "key_admin", Role: auth.RoleAdmin, Tenants: []string{"acme", auth.SystemGrant}, Actions: []string{"*"}},
		betaOpKey:  {ID: "key_beta_op", Role: auth.RoleOperator, Tenants: []string{"beta"}, Actions: []string{"*"}},
		fsReadKey:  {ID: "key_fsread", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"fs.read"}},
		auditorKey: {ID: "key_auditor", Role: auth.RoleAuditor, Tenants: []string{"acme"}, Actions: []string{"*"}},
	}}
	var n atomic.Int64
	ac := access.Config{Keys: k, Audit: log, Now: now, Policies: policies}
	for _, o := range opts {
		o(&ac)
	}
	acc, err := access.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	ring, _, err := checkpoint.LoadOrCreate(filepath.Join(t.TempDir(), "audit-key.json"), mrand.NewChaCha8([32]byte{1}), now())
	if err != nil {
		t.Fatal(err)
	}
	cps := checkpoint.New(checkpoint.Config{Audit: log, Keys: ring, Store: checkpoint.NewStore(st.Checkpoints), Now: now, Node: "test"})
	log.OnAppend(cps.Appended)
	if err := cps.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{Gate: g, Switches: sw, Policies: policies, Approvals: approvals, Access: acc, Audit: log, Ready: st.Ready, Now: now, Checkpoints: cps,
		RequestID: func() string { return "req_" + strings.Repeat("0", 3) + string(rune('0'+n.Add(1)%10)) }}
	s := api.New(cfg)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &fixture{log: log, st: st, srv: srv, keys: k, exec: ex, handler: s, acc: acc, cfg: cfg}
}

type resp struct {
	code   int
	body   map[string]any
	raw    []byte
	header http.Header
}

func (f *fixture) do(t *testing.T, method, path, key string, body []byte) resp {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return readResp(r)
}

// readResp reads and closes r's body: its status, raw body, headers and
// the body decoded as JSON (if it is).
func readResp(r *http.Response) resp {
	defer r.Body.Close()
	raw, _ := io.ReadAll(r.Body)
	out := resp{code: r.StatusCode, raw: raw, header: r.Header}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// approveAs has an operator approve an intent through the API.
func (f *fixture) approveAs(t *testing.T, tn, id, key string) {
	t.Helper()
	r := f.do(t, "POST", "/v1/tenants/"+tn+"/intents/"+id+"/approvals", key, mustJSON(map[string]string{"decision": "approve", "reason": "ok"}))
	if r.code != 200 {
		t.Fatalf("approve %s: %d %s", id, r.code, r.raw)
	}
}

func errCode(r resp) string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

var writeBody = mustJSON(map[string]any{"action": "fs.write", "target": "a.txt", "params": map[string]string{"content": "x"}, "idempotency_key": "k1"})

func TestAuthAndTenantBoundary(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, method, path, key string
		body                    []byte
		code                    int
		errCode                 string
		noLookup                bool
	}{
		{"healthz needs no key", "GET", "/healthz", "", nil, 200, "", true},
		{"readyz needs no key", "GET", "/readyz", "", nil, 200, "", true},
		{"no key", "POST", "/v1/tenants/acme/intents", "", writeBody, 401, "unauthenticated", true},
		{"bad key", "POST", "/v1/tenants/acme/intents", "exo_nope", writeBody, 401, "unauthenticated", false},
		{"no key on audit", "GET", "/v1/tenants/acme/audit", "", nil, 401, "unauthenticated", true},
		{"dotted tenant", "POST", "/v1/tenants/ac.me/intents", agentKey, writeBody, 400, "invalid_tenant", true},
		{"wildcard tenant", "GET", "/v1/tenants/*/audit", agentKey, nil, 400, "invalid_tenant", true},
		{"gt tenant", "GET", "/v1/tenants/%3E/audit", agentKey, nil, 400, "invalid_tenant", true},
		{"space tenant", "GET", "/v1/tenants/a%20b/audit", agentKey, nil, 400, "invalid_tenant", true},
		{"uppercase tenant", "GET", "/v1/tenants/Acme/audit", agentKey, nil, 400, "invalid_tenant", true},
		{"tenant not granted", "POST", "/v1/tenants/acme/intents", otherKey, writeBody, 404, "not_found", false},
		{"class not granted", "POST", "/v1/tenants/acme/intents", readerKey, writeBody, 403, "forbidden", false},
		{"unknown route", "GET", "/v1/nothing", agentKey, nil, 404, "not_found", true},
		{"wrong method", "DELETE", "/v1/tenants/acme/intents", agentKey, nil, 405, "method_not_allowed", true},
		{"body too large", "POST", "/v1/tenants/acme/intents", agentKey, bytes.Repeat([]byte("x"), api.MaxBody+1), 413, "body_too_large", false},
		{"invalid json", "POST", "/v1/tenants/acme/intents", agentKey, []byte(`{"action":`), 400, "invalid_request", false},
		{"unknown field", "POST", "/v1/tenants/acme/intents", agentKey, []byte(`{"action":"fs.read","target":"a","idempotency_key":"k","evil":1}`), 400, "invalid_request", false},
		{"bad idempotency key", "POST", "/v1/tenants/acme/intents", agentKey, []byte(`{"action":"fs.read","target":"a","idempotency_key":"a.b"}`), 400, "invalid_request", false},
		{"unknown action", "POST", "/v1/tenants/acme/intents", agentKey, []byte(`{"action":"shell.exec","target":"a","idempotency_key":"k"}`), 400, "unknown_action", false},
		{"missing intent", "GET", "/v1/tenants/acme/intents/in_missing", agentKey, nil, 404, "not_found", false},
		{"bad audit query", "GET", "/v1/tenants/acme/audit?limit=x", agentKey, nil, 400, "invalid_request", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.keys.lookups.Load()
			r := f.do(t, tt.method, tt.path, tt.key, tt.body)
			if r.code != tt.code || errCode(r) != tt.errCode {
				t.Fatalf("%s %s = %d %s, want %d %s\n%s", tt.method, tt.path, r.code, errCode(r), tt.code, tt.errCode, r.raw)
			}
			if tt.errCode != "" {
				if msg, _ := r.body["error"].(map[string]any)["message"].(string); msg == "" {
					t.Fatal("error without a message")
				}
			}
			if tt.noLookup && f.keys.lookups.Load() != before {
				t.Fatal("credentials were looked up before the request was refused")
			}
		})
	}
	if f.exec.runs != 0 {
		t.Fatal("an executor ran")
	}
}

func TestProposeExecuteAndAudit(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, writeBody)
	if r.code != 201 {
		t.Fatalf("propose = %d %s", r.code, r.raw)
	}
	id := r.body["intent"].(map[string]any)["id"].(string)
	if r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, writeBody); r.code != 200 {
		t.Fatalf("repeat propose = %d %s", r.code, r.raw)
	}
	f.approveAs(t, "acme", id, opKey)
	if r := f.do(t, "POST", "/v1/tenants/acme/intents/"+id+"/execute", otherKey, nil); r.code != 404 {
		t.Fatalf("execute by another tenant's key = %d %s", r.code, r.raw)
	}
	r = f.do(t, "POST", "/v1/tenants/acme/intents/"+id+"/execute", agentKey, nil)
	if r.code != 200 || r.body["result"].(map[string]any)["status"] != "succeeded" {
		t.Fatalf("execute = %d %s", r.code, r.raw)
	}
	esc := mustJSON(map[string]any{"action": "fs.delete", "target": "../../x", "idempotency_key": "esc"})
	r = f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, esc)
	escID := r.body["intent"].(map[string]any)["id"].(string)
	r = f.do(t, "POST", "/v1/tenants/acme/intents/"+escID+"/execute", agentKey, nil)
	if r.code != 403 || errCode(r) != "blocked" || r.body["decision"] == nil {
		t.Fatalf("blocked execute = %d %s", r.code, r.raw)
	}
	if reasons := r.body["error"].(map[string]any)["reasons"].([]any); len(reasons) != 2 || reasons[0] != "policy_denied" || reasons[1] != "approval_required" {
		t.Fatalf("reasons = %v", reasons)
	}
	r = f.do(t, "GET", "/v1/tenants/acme/intents/"+id, agentKey, nil)
	if r.code != 200 || r.body["state"] != "succeeded" {
		t.Fatalf("get = %d %s", r.code, r.raw)
	}
	// Paging the audit log.
	r = f.do(t, "GET", "/v1/tenants/acme/audit?after=1&limit=2", agentKey, nil)
	if recs := r.body["records"].([]any); r.code != 200 || len(recs) != 2 || r.body["next_after"] != float64(3) {
		t.Fatalf("audit page = %d %s", r.code, r.raw)
	}
	r = f.do(t, "GET", "/v1/tenants/acme/audit/export", opKey, nil)
	lines := bytes.Split(bytes.TrimSuffix(r.raw, []byte("\n")), []byte("\n"))
	// switch disengaged; proposed, approval requested, granted, allowed, approval executed, started, succeeded;
	// proposed, approval requested, blocked; and the checkpoint of the last
	if r.code != 200 || len(lines) != 12 || !contract.IsCheckpointLine(lines[11]) {
		t.Fatalf("export = %d, %d lines, want 11 records and a checkpoint", r.code, len(lines))
	}
	if cp, err := contract.DecodeCheckpoint(lines[11]); err != nil || cp.Seq != 11 || f.cfg.Checkpoints.Trust().Verify(cp) != nil {
		t.Fatalf("the export's last line is not the node's checkpoint of record 11: %+v %v", cp, err)
	}
	r = f.do(t, "GET", "/v1/tenants/acme/audit/verify", opKey, nil)
	if r.code != 200 || r.body["pass"] != true {
		t.Fatalf("verify = %d %s", r.code, r.raw)
	}
	// Beta's chain holds its switch change and its key's attempt on acme,
	// and nothing of acme's state.
	r = f.do(t, "GET", "/v1/tenants/beta/audit/export", betaOpKey, nil)
	if r.code != 200 || bytes.Count(r.raw, []byte("\n")) != 3 || bytes.Contains(r.raw, []byte(`"tenant":"acme"`)) ||
		!bytes.Contains(r.raw, []byte(`"kind":"access.cross_tenant"`)) {
		t.Fatalf("beta export = %d %q", r.code, r.raw)
	}
}

// TestRoutesMatchOpenAPI: the server's routes are exactly the paths and
// methods of contracts/openapi.yaml.
func TestRoutesMatchOpenAPI(t *testing.T) {
	f, err := os.Open("../../contracts/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pathRE := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodRE := regexp.MustCompile(`^    (get|post|put|patch|delete):\s*$`)
	var spec []string
	var cur string
	sc := bufio.NewScanner(f)
	inPaths := false
	for sc.Scan() {
		line := sc.Text()
		if line == "paths:" {
			inPaths = true
			continue
		}
		if !inPaths {
			continue
		}
		if m := pathRE.FindStringSubmatch(line); m != nil {
			cur = m[1]
		} else if m := methodRE.FindStringSubmatch(line); m != nil && cur != "" {
			spec = append(spec, strings.ToUpper(m[1])+" "+cur)
		}
	}
	var routes []string
	for _, r := range api.New(api.Config{}).Routes() {
		routes = append(routes, r.Method+" "+r.Path)
	}
	slices.Sort(spec)
	slices.Sort(routes)
	if !slices.Equal(spec, routes) {
		t.Fatalf("routes and openapi.yaml differ:\nserver:  %v\nopenapi: %v", routes, spec)
	}
}

func TestKillSwitchEndpoints(t *testing.T) {
	f := newFixture(t)
	engage := mustJSON(map[string]any{"engaged": true, "reason": "incident 42"})
	disengage := mustJSON(map[string]any{"engaged": false, "reason": "resolved"})
	tests := []struct {
		name, method, path, key string
		body                    []byte
		code                    int
		errCode                 string
	}{
		{"agent cannot flip global", "PUT", "/v1/killswitch", agentKey, engage, 403, "forbidden"},
		{"operator cannot flip global", "PUT", "/v1/killswitch", opKey, engage, 403, "forbidden"},
		{"agent cannot flip tenant", "PUT", "/v1/tenants/acme/killswitch", agentKey, engage, 403, "forbidden"},
		{"operator of another tenant", "PUT", "/v1/tenants/beta/killswitch", opKey, engage, 404, "not_found"},
		{"reason required", "PUT", "/v1/tenants/acme/killswitch", opKey, []byte(`{"engaged":true}`), 400, "invalid_request"},
		{"engaged required", "PUT", "/v1/tenants/acme/killswitch", opKey, []byte(`{"reason":"x"}`), 400, "invalid_request"},
		{"engaged must be a bool", "PUT", "/v1/tenants/acme/killswitch", opKey, []byte(`{"engaged":"no","reason":"x"}`), 400, "invalid_request"},
		{"no key", "GET", "/v1/killswitch", "", nil, 401, "unauthenticated"},
		{"admin reads global", "GET", "/v1/killswitch", adminKey, nil, 200, ""},
		{"operator reads tenant", "GET", "/v1/tenants/acme/killswitch", opKey, nil, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(t, tt.method, tt.path, tt.key, tt.body)
			if r.code != tt.code || errCode(r) != tt.errCode {
				t.Fatalf("%s %s = %d %s, want %d %s\n%s", tt.method, tt.path, r.code, errCode(r), tt.code, tt.errCode, r.raw)
			}
		})
	}
	// Engage global: execute is blocked with the switch named; disengage: it runs.
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, writeBody)
	id := r.body["intent"].(map[string]any)["id"].(string)
	f.approveAs(t, "acme", id, opKey)
	for _, scope := range []struct{ path, key, reason string }{
		{"/v1/killswitch", adminKey, "killswitch_global_engaged"},
		{"/v1/tenants/acme/killswitch", opKey, "killswitch_tenant_engaged"},
	} {
		r = f.do(t, "PUT", scope.path, scope.key, engage)
		cur, _ := r.body["current"].(map[string]any)
		if r.code != 200 || cur["engaged"] != true || cur["actor"] != strings.TrimPrefix(map[string]string{adminKey: "key_admin", opKey: "key_op"}[scope.key], "") {
			t.Fatalf("engage %s = %d %s", scope.path, r.code, r.raw)
		}
		r = f.do(t, "POST", "/v1/tenants/acme/intents/"+id+"/execute", agentKey, nil)
		if reasons, _ := r.body["error"].(map[string]any)["reasons"].([]any); r.code != 403 || len(reasons) == 0 || reasons[0] != scope.reason {
			t.Fatalf("execute while %s engaged = %d %s", scope.path, r.code, r.raw)
		}
		if r := f.do(t, "PUT", scope.path, scope.key, disengage); r.code != 200 {
			t.Fatalf("disengage = %d %s", r.code, r.raw)
		}
	}
	if r = f.do(t, "POST", "/v1/tenants/acme/intents/"+id+"/execute", agentKey, nil); r.code != 200 {
		t.Fatalf("execute after disengage = %d %s", r.code, r.raw)
	}
	if f.exec.runs != 1 {
		t.Fatalf("executor ran %d times", f.exec.runs)
	}
}

func TestApprovalEndpoints(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for _, k := range []string{"q1", "q2"} {
		body := mustJSON(map[string]any{"action": "fs.write", "target": k + ".txt", "params": map[string]string{"content": "x"}, "idempotency_key": k})
		r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, body)
		ids = append(ids, r.body["intent"].(map[string]any)["id"].(string))
	}
	r := f.do(t, "GET", "/v1/tenants/acme/approvals?status=pending", opKey, nil)
	items, _ := r.body["approvals"].([]any)
	if r.code != 200 || len(items) != 2 {
		t.Fatalf("queue = %d %s", r.code, r.raw)
	}
	first := items[0].(map[string]any)
	if first["approval"].(map[string]any)["intent_id"] != ids[0] || first["intent"].(map[string]any)["target"] != "q1.txt" {
		t.Fatalf("queue is not oldest first with intent details: %s", r.raw)
	}
	byOp := f.do(t, "POST", "/v1/tenants/acme/intents", opKey, mustJSON(map[string]any{"action": "fs.write", "target": "op.txt", "params": map[string]string{"content": "x"}, "idempotency_key": "q-op"}))
	opOwn := byOp.body["intent"].(map[string]any)["id"].(string)
	decide := func(key, id, decision string) resp {
		return f.do(t, "POST", "/v1/tenants/acme/intents/"+id+"/approvals", key, mustJSON(map[string]string{"decision": decision, "reason": "r"}))
	}
	tests := []struct {
		name, key, id, decision string
		code                    int
		errCode                 string
	}{
		{"the proposer, though an operator", opKey, opOwn, "approve", 403, "self_approval"},
		{"an agent", readerKey, ids[0], "approve", 403, "forbidden"},
		{"bad decision", opKey, ids[0], "maybe", 400, "invalid_request"},
		{"unknown intent", opKey, "in_nope", "approve", 404, "not_found"},
		{"operator approves", opKey, ids[0], "approve", 200, ""},
		{"approved twice by the same operator", opKey, ids[0], "approve", 409, "conflict"},
		{"admin denies", adminKey, ids[1], "deny", 200, ""},
		{"denial is final", opKey, ids[1], "approve", 409, "conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := decide(tt.key, tt.id, tt.decision)
			if r.code != tt.code || errCode(r) != tt.errCode {
				t.Fatalf("= %d %s, want %d %s", r.code, r.raw, tt.code, tt.errCode)
			}
		})
	}
	if r := f.do(t, "POST", "/v1/tenants/acme/intents/"+ids[0]+"/execute", agentKey, nil); r.code != 200 {
		t.Fatalf("execute approved = %d %s", r.code, r.raw)
	}
	r = f.do(t, "POST", "/v1/tenants/acme/intents/"+ids[1]+"/execute", agentKey, nil)
	if reasons, _ := r.body["error"].(map[string]any)["reasons"].([]any); r.code != 403 || len(reasons) != 1 || reasons[0] != "approval_denied" {
		t.Fatalf("execute denied = %d %s", r.code, r.raw)
	}
	for status, want := range map[string]int{"pending": 1, "executed": 1, "denied": 1, "": 3} {
		r := f.do(t, "GET", "/v1/tenants/acme/approvals?status="+status, opKey, nil)
		if items, _ := r.body["approvals"].([]any); len(items) != want {
			t.Errorf("status %q: %d items, want %d", status, len(items), want)
		}
	}
	if r := f.do(t, "GET", "/v1/tenants/acme/approvals?status=bogus", opKey, nil); r.code != 400 {
		t.Fatalf("bad status filter = %d", r.code)
	}
	if r := f.do(t, "GET", "/v1/tenants/acme/audit/verify", opKey, nil); r.body["pass"] != true {
		t.Fatalf("chain: %s", r.raw)
	}
}

type contractRecord = contract.AuditRecord

func auditLog(f *fixture) *audit.Log { return f.log }

func TestMetricsEndpoint(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, writeBody)
	f.do(t, "POST", "/v1/tenants/acme/intents/"+r.body["intent"].(map[string]any)["id"].(string)+"/execute", agentKey, nil)
	req, _ := http.NewRequest("GET", f.srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	for _, want := range []string{`exoarmur_gate_decisions_total{reason="approval_required",verdict="DENY"}`, "exoarmur_audit_append_seconds_bucket",
		`exoarmur_killswitch_engaged{scope="acme"} 0`, "go_goroutines"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if r := f.do(t, "GET", "/metrics", "", nil); r.code != 401 {
		t.Fatalf("metrics without a key = %d", r.code)
	}
}

// TestListIntentsQuery: the listing's query is strict: an unknown or
// repeated parameter, a malformed time or limit, and in_doubt with other
// filters are 400 naming the parameter; state=in_doubt alone keeps its V1
// answer.
func TestListIntentsQuery(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ query, want string }{
		{"?states=proposed", `unknown parameter`},
		{"?state=proposed&state=blocked", `give it once`},
		{"?since=yesterday", `"since"`},
		{"?limit=0", `"limit"`},
		{"?limit=x", `"limit"`},
		{"?state=in_doubt&action=fs.read", `in_doubt lists in-doubt executions`},
	} {
		r := f.do(t, "GET", "/v1/tenants/acme/intents"+c.query, agentKey, nil)
		e, _ := r.body["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if r.code != 400 || e["code"] != contract.CodeInvalid || !strings.Contains(msg, c.want) {
			t.Errorf("%s: %d %s, want 400 invalid naming %s", c.query, r.code, r.raw, c.want)
		}
	}
	r := f.do(t, "GET", "/v1/tenants/acme/intents?state=in_doubt", agentKey, nil)
	if r.code != 200 || r.body["state"] != "in_doubt" {
		t.Fatalf("state=in_doubt: %d %s", r.code, r.raw)
	}
	r = f.do(t, "GET", "/openapi.yaml", "", nil)
	if r.code != 200 || r.header.Get("Content-Type") != "application/yaml" || !bytes.HasPrefix(r.raw, []byte("openapi:")) {
		t.Fatalf("GET /openapi.yaml without a key: %d %q", r.code, r.header.Get("Content-Type"))
	}
}
