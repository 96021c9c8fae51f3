package api_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// stateSnapshot is every key and revision of every tenant-state bucket.
func (f *fixture) stateSnapshot(t *testing.T) string {
	t.Helper()
	var out []string
	for name, kv := range map[string]jetstream.KeyValue{"intents": f.st.Intents.KeyValue(), "idem": f.st.Idempotency.KeyValue(), "approvals": f.st.Approvals.KeyValue(), "control": f.st.Control.KeyValue()} {
		lister, err := kv.ListKeys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for k := range lister.Keys() {
			e, err := kv.Get(context.Background(), k)
			if err == nil {
				out = append(out, fmt.Sprintf("%s/%s@%d", name, k, e.Revision()))
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// TestAuthMatrix: every authenticated endpoint x {no credentials,
// malformed, revoked, expired, wrong tenant, wrong role, wrong action
// class, right}. Each refusal has its status, changes no state, and leaves
// the audit record that is due.
func TestAuthMatrix(t *testing.T) {
	f := newFixture(t, func(c *access.Config) { c.FailLimit, c.GlobalFailBurst = 1<<20, 1<<20 }) // the rate limit has its own test
	// State to act on: an acme write intent proposed by the agent.
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, writeBody)
	id := r.body["intent"].(map[string]any)["id"].(string)

	type cred struct {
		name, key string
		status    int
	}
	// The request for each route, with the op's "right" principal.
	type call struct {
		method, path string
		body         []byte
		right        string // a key that may do it
		rightStatus  int
		wrongRole    string // a key granted the tenant whose role may not ("" = every role may)
		wrongClass   string // a key granted the tenant whose action classes may not ("" = n/a)
		tenantRoute  bool
	}
	calls := map[string]call{}
	for _, rt := range api.New(api.Config{}).Routes() {
		if !rt.Auth {
			continue
		}
		path := strings.ReplaceAll(strings.ReplaceAll(rt.Path, "{tenant}", "acme"), "{id}", id)
		c := call{method: rt.Method, path: path, right: agentKey, rightStatus: 200, tenantRoute: strings.Contains(rt.Path, "{tenant}")}
		switch rt.Method + " " + rt.Path {
		case "POST /v1/tenants/{tenant}/intents":
			c.body, c.rightStatus, c.wrongClass = mustJSON(map[string]any{"action": "fs.write", "target": "m.txt", "params": map[string]string{"content": "x"}, "idempotency_key": "matrix"}), 201, readerKey
		case "POST /v1/tenants/{tenant}/intents/{id}/execute":
			// Routes run in sorted order, so the approvals route (approved by
			// the operator) has run before this one: the right principal executes.
			c.wrongClass = readerKey
		case "POST /v1/tenants/{tenant}/intents/{id}/approvals":
			c.body, c.right, c.wrongRole = mustJSON(map[string]string{"decision": "approve", "reason": "m"}), opKey, agentKey
		case "GET /v1/tenants/{tenant}/approvals":
			c.right, c.wrongRole = opKey, agentKey
		case "GET /v1/tenants/{tenant}/audit/export", "GET /v1/tenants/{tenant}/audit/verify":
			c.right, c.wrongRole = auditorKey, agentKey
		case "GET /v1/tenants/{tenant}/killswitch":
			c.right, c.wrongRole = opKey, agentKey
		case "PUT /v1/tenants/{tenant}/killswitch":
			c.body, c.right, c.wrongRole = mustJSON(map[string]any{"engaged": false, "reason": "m"}), opKey, agentKey
		case "GET /v1/killswitch":
			c.right, c.wrongRole = adminKey, opKey
		case "PUT /v1/killswitch":
			c.body, c.right, c.wrongRole = mustJSON(map[string]any{"engaged": false, "reason": "m"}), adminKey, opKey
		case "POST /v1/keys":
			c.body, c.right, c.rightStatus, c.wrongRole = mustJSON(map[string]any{"name": "n", "role": "agent", "tenants": []string{"acme"}, "actions": []string{"A0"}}), adminKey, 503, opKey
		case "GET /v1/tenants/{tenant}/intents":
			c.path += "?state=in_doubt"
		case "POST /v1/tenants/{tenant}/intents/{id}/resolve":
			// Nothing is in doubt: the operator is authorized and told so.
			c.body, c.right, c.rightStatus, c.wrongRole = mustJSON(map[string]string{"outcome": "failed", "reason": "m"}), opKey, 409, agentKey
		case "GET /v1/tenants/{tenant}/audit/checkpoint":
			// Routes run in sorted order: none is signed yet, and the
			// reader is authorized and told so.
			c.right, c.rightStatus, c.wrongRole = opKey, 404, agentKey
		case "POST /v1/tenants/{tenant}/audit/checkpoint":
			c.right, c.wrongRole = opKey, agentKey
		case "POST /v1/tenants/{tenant}/mcp":
			// This server has no MCP upstreams: the agent is authorized
			// (propose) and told so; an auditor never proposes.
			c.body, c.rightStatus, c.wrongRole = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`), 404, auditorKey
		case "GET /v1/tenants/{tenant}/policy/shadow":
			// This server runs no shadow bundle: the reader is authorized and told so.
			c.right, c.rightStatus, c.wrongRole = opKey, 404, agentKey
		case "GET /v1/tenants/{tenant}/policy":
			c.right, c.wrongRole = auditorKey, agentKey
		case "PUT /v1/tenants/{tenant}/policy":
			c.body, c.right, c.wrongRole = defaultActivation(t, "m"), opKey, auditorKey
		case "GET /v1/policy":
			c.right, c.wrongRole = adminKey, opKey
		case "PUT /v1/policy":
			c.body, c.right, c.wrongRole = defaultActivation(t, "m"), adminKey, opKey
		case "GET /metrics":
			c.right, c.wrongRole = adminKey, opKey
		case "GET /v1/keys":
			c.right, c.rightStatus, c.wrongRole = adminKey, 503, opKey
		case "DELETE /v1/keys/{id}":
			c.path, c.right, c.rightStatus, c.wrongRole = "/v1/keys/key_0011223344556677", adminKey, 503, opKey
		case "POST /v1/keys/{id}/consent":
			c.path, c.body, c.right, c.rightStatus, c.wrongRole = "/v1/keys/key_0011223344556677/consent", mustJSON(map[string]string{"reason": "m"}), adminKey, 503, opKey
		}
		calls[rt.Method+" "+rt.Path] = c
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range calls {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range names {
		c := calls[name]
		creds := []cred{{"no credentials", "", 401}, {"malformed", "not-a-key", 401}, {"revoked", revokedKey, 401}, {"expired", expiredKey, 401}}
		if c.tenantRoute {
			creds = append(creds, cred{"wrong tenant", otherKey, 404})
		}
		if c.wrongRole != "" {
			creds = append(creds, cred{"wrong role", c.wrongRole, 403})
		}
		if c.wrongClass != "" {
			creds = append(creds, cred{"wrong action class", c.wrongClass, 403})
		}
		for _, cr := range creds {
			t.Run(name+"/"+cr.name, func(t *testing.T) {
				before := f.stateSnapshot(t)
				failsBefore := f.systemCount(t, access.KindAuthFailures)
				crossBefore := f.chainCount(t, "beta", access.KindCrossTenant)
				r := f.do(t, c.method, c.path, cr.key, c.body)
				if r.code != cr.status {
					t.Fatalf("= %d %s, want %d", r.code, r.raw, cr.status)
				}
				after := f.stateSnapshot(t)
				if cr.name == "wrong action class" && c.method == "POST" && strings.HasSuffix(c.path, "/execute") {
					// An execute by a principal without the class is a gate
					// decision: recorded as gate.blocked, and as the intent's
					// last decision. Nothing else may change.
					before, after = dropPrefix(before, "intents/"), dropPrefix(after, "intents/")
				}
				if after != before {
					t.Fatalf("state changed:\n%s\n---\n%s", before, after)
				}
				switch cr.status {
				case 401:
					// Aggregated: the pending failures are one record.
					if err := f.acc.FlushAudit(context.Background()); err != nil {
						t.Fatal(err)
					}
					if f.systemCount(t, access.KindAuthFailures) != failsBefore+1 {
						t.Fatal("the failed authentication was not audited in the system chain")
					}
				case 404:
					if f.chainCount(t, "beta", access.KindCrossTenant) != crossBefore+1 {
						t.Fatal("the cross-tenant attempt was not audited in the caller's chain")
					}
				}
			})
		}
		t.Run(name+"/right", func(t *testing.T) {
			r := f.do(t, c.method, c.path, c.right, c.body)
			if r.code != c.rightStatus {
				t.Fatalf("= %d %s, want %d", r.code, r.raw, c.rightStatus)
			}
		})
	}
	// The secret of a failed attempt never reaches the audit log.
	f.do(t, "GET", "/v1/tenants/acme/audit", "exo_0011223344556677_SECRETSECRETSECRETSECRETSECRETSECRETSECRET1", nil)
	if err := f.acc.FlushAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if raw := f.systemExport(t); strings.Contains(raw, "SECRETSECRET") || !strings.Contains(raw, `"key_id":"key_0011223344556677"`) {
		t.Fatal("a failed attempt's secret was logged, or its public key id was not")
	}
}

func (f *fixture) systemExport(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	err := auditLog(f).Scan(context.Background(), tenant.System, 0, 0, func(raw []byte, _ contractRecord) error {
		b.Write(raw)
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func (f *fixture) systemCount(t *testing.T, kind string) int {
	return strings.Count(f.systemExport(t), `"kind":"`+kind+`"`)
}

func (f *fixture) chainCount(t *testing.T, tn, kind string) int {
	key := map[string]string{"acme": opKey, "beta": betaOpKey}[tn]
	return strings.Count(string(f.do(t, "GET", "/v1/tenants/"+tn+"/audit/export", key, nil).raw), `"kind":"`+kind+`"`)
}

// realKeys is a registry of well-formed keys with auth.Keys' answers: a
// wrong secret of a registered id is ErrUnauthenticated, any other key
// ErrUnknownKey.
type realKeys map[string]*auth.Principal

func (k realKeys) Authenticate(_ context.Context, key string) (*auth.Principal, error) {
	if p, ok := k[key]; ok {
		return p, nil
	}
	for known := range k {
		if id := auth.KeyID(key); id != "" && id == auth.KeyID(known) {
			return nil, auth.ErrUnauthenticated
		}
	}
	return nil, auth.ErrUnknownKey
}

// from is an HTTP client whose connections come from the loopback address ip.
func from(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

func (f *fixture) doFrom(t *testing.T, ip, path, key string) resp {
	t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	r, err := from(ip).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return readResp(r)
}

// TestFailedAuthIsRateLimited (issue 16), through the API from real
// loopback addresses: 20 bad keys from one address make it 429
// rate_limited with a Retry-After, yet a valid key from that address is
// served; bad secrets for one key id from 40 addresses are 429 after the
// key's limit, and another key id's valid key is served from each.
func TestFailedAuthIsRateLimited(t *testing.T) {
	const (
		victim = "exo_00112233445566aa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		valid  = "exo_00112233445566bb_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
	)
	keys := realKeys{
		victim: {ID: "key_00112233445566aa", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"*"}},
		valid:  {ID: "key_00112233445566bb", Role: auth.RoleAgent, Tenants: []string{"acme"}, Actions: []string{"*"}},
	}
	f := newFixture(t, func(c *access.Config) { c.Keys = keys })
	const path = "/v1/tenants/acme/audit"
	limited := func(r resp) bool {
		secs, err := strconv.Atoi(r.header.Get("Retry-After"))
		return r.code == 429 && errCode(r) == "rate_limited" && err == nil && secs >= 1
	}
	for i := range 20 {
		if r := f.doFrom(t, "127.0.0.2", path, "exo_wrong"); r.code != 401 {
			t.Fatalf("bad key %d = %d %s", i, r.code, r.raw)
		}
	}
	if r := f.doFrom(t, "127.0.0.2", path, "exo_wrong"); !limited(r) {
		t.Fatalf("21st bad key = %d %s (Retry-After %q), want 429 rate_limited with Retry-After", r.code, r.raw, r.header.Get("Retry-After"))
	}
	if r := f.doFrom(t, "127.0.0.2", path, valid); r.code != 200 {
		t.Fatalf("a valid key from the flooded address = %d %s, want 200", r.code, r.raw)
	}
	for i := range 40 {
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		guess := victim[:len(victim)-2] + fmt.Sprintf("%02d", i)
		r := f.doFrom(t, ip, path, guess)
		switch {
		case i < 5 && r.code != 401:
			t.Fatalf("guess %d from %s = %d %s, want 401", i, ip, r.code, r.raw)
		case i >= 5 && !limited(r):
			t.Fatalf("guess %d from %s = %d %s (Retry-After %q), want 429 rate_limited with Retry-After", i, ip, r.code, r.raw, r.header.Get("Retry-After"))
		}
		if r := f.doFrom(t, ip, path, valid); r.code != 200 {
			t.Fatalf("another key id's valid key from %s = %d %s", ip, r.code, r.raw)
		}
	}
	if r := f.do(t, "GET", "/healthz", "", nil); r.code != 200 {
		t.Fatal("health checks are not rate limited")
	}
}

func dropPrefix(snapshot, prefix string) string {
	var keep []string
	for _, l := range strings.Split(snapshot, "\n") {
		if !strings.HasPrefix(l, prefix) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// defaultActivation is the body of an activation of the default bundle's
// files, for reason.
func defaultActivation(tb testing.TB, reason string) []byte {
	tb.Helper()
	var files []map[string]string
	for _, f := range policy.SplitSource(policy.Default().Source()) {
		files = append(files, map[string]string{"name": f.Name, "source": string(f.Source)})
	}
	return mustJSON(map[string]any{"reason": reason, "files": files})
}

// TestMCPKeysAreReserved: a REST caller cannot take the idempotency key
// the MCP front end derives for another principal's call (it would turn
// that call into a conflict): keys starting "mcp-" are refused, nothing
// written.
func TestMCPKeysAreReserved(t *testing.T) {
	f := newFixture(t)
	before := f.stateSnapshot(t)
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, mustJSON(map[string]any{"action": "fs.read", "target": "a.txt", "idempotency_key": "mcp-squatted"}))
	if r.code != 400 || !strings.Contains(string(r.raw), "reserved for the MCP front end") {
		t.Fatalf("= %d %s, want 400 naming the reservation", r.code, r.raw)
	}
	if after := f.stateSnapshot(t); after != before {
		t.Fatalf("state changed:\n%s\n---\n%s", before, after)
	}
}
