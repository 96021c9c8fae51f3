package api_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exoarmur/exoarmur/internal/api"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// TestTenantsNeverMeet: every principal of tenant acme (agent, operator,
// admin), on every tenant-scoped route, addressed at tenant beta or at
// beta's intent, gets 404; beta's audit chain is byte-identical before and
// after; every attempt is audited in acme's own chain.
func TestTenantsNeverMeet(t *testing.T) {
	f := newFixture(t)
	// Beta has state: an executed intent.
	r := f.do(t, "POST", "/v1/tenants/beta/intents", otherKey, writeBody)
	if r.code != 201 {
		t.Fatalf("beta propose = %d %s", r.code, r.raw)
	}
	betaID := r.body["intent"].(map[string]any)["id"].(string)
	f.approveAs(t, "beta", betaID, betaOpKey)
	if r := f.do(t, "POST", "/v1/tenants/beta/intents/"+betaID+"/execute", otherKey, nil); r.code != 200 {
		t.Fatalf("beta execute = %d %s", r.code, r.raw)
	}
	before := f.do(t, "GET", "/v1/tenants/beta/audit/export", betaOpKey, nil).raw
	acmeBefore := bytes.Count(f.do(t, "GET", "/v1/tenants/acme/audit/export", opKey, nil).raw, []byte("\n"))

	attempts := 0
	var routes []api.Route
	for _, rt := range api.New(api.Config{}).Routes() {
		if strings.Contains(rt.Path, "{tenant}") {
			routes = append(routes, rt)
		}
	}
	for _, rt := range routes {
		for _, key := range []string{agentKey, opKey, adminKey} {
			var body []byte
			switch {
			case strings.HasSuffix(rt.Path, "/intents") && rt.Method == "POST":
				body = writeBody
			case strings.HasSuffix(rt.Path, "/killswitch") && rt.Method == "PUT":
				body = mustJSON(map[string]any{"engaged": true, "reason": "cross-tenant"})
			case strings.HasSuffix(rt.Path, "/approvals") && rt.Method == "POST":
				body = mustJSON(map[string]any{"decision": "deny", "reason": "cross-tenant"})
			}
			path := strings.ReplaceAll(strings.ReplaceAll(rt.Path, "{tenant}", "beta"), "{id}", betaID)
			r := f.do(t, rt.Method, path, key, body)
			attempts++
			if r.code != 404 || errCode(r) != "not_found" {
				t.Errorf("%s %s with an acme key = %d %s, want 404", rt.Method, path, r.code, r.raw)
			}
			if bytes.Contains(r.raw, []byte(betaID)) || bytes.Contains(r.raw, []byte("beta")) {
				t.Errorf("%s %s leaks: %s", rt.Method, path, r.raw)
			}
		}
	}
	// Beta's intent through acme's own URL does not exist either.
	for _, m := range []struct{ method, suffix string }{{"GET", ""}, {"POST", "/execute"}} {
		if r := f.do(t, m.method, "/v1/tenants/acme/intents/"+betaID+m.suffix, agentKey, nil); r.code != 404 {
			t.Errorf("%s acme/intents/<beta's id>%s = %d %s", m.method, m.suffix, r.code, r.raw)
		}
	}
	after := f.do(t, "GET", "/v1/tenants/beta/audit/export", betaOpKey, nil).raw
	if !bytes.Equal(before, after) {
		t.Fatal("beta's audit chain changed under cross-tenant attempts")
	}
	if f.exec.runs != 1 {
		t.Fatalf("executor ran %d times, want 1 (beta's own)", f.exec.runs)
	}
	if _, ts := f.switchesRead(t); ts {
		t.Fatal("beta's kill switch was flipped by acme")
	}
	acmeAfter := f.do(t, "GET", "/v1/tenants/acme/audit/export", opKey, nil).raw
	if got := bytes.Count(acmeAfter, []byte(`"kind":"access.cross_tenant"`)); got != attempts {
		t.Fatalf("acme's chain has %d cross-tenant records, want %d", got, attempts)
	}
	if bytes.Count(acmeAfter, []byte("\n")) != acmeBefore+attempts {
		t.Fatal("acme's chain gained records other than the audited attempts")
	}
	if r := f.do(t, "GET", "/v1/tenants/acme/audit/verify", opKey, nil); r.body["pass"] != true {
		t.Fatalf("acme chain: %s", r.raw)
	}
}

// switchesRead reports whether beta's switch is engaged, through the API.
func (f *fixture) switchesRead(t *testing.T) (int, bool) {
	r := f.do(t, "GET", "/v1/tenants/beta/killswitch", betaOpKey, nil)
	st, _ := r.body["state"].(map[string]any)
	return r.code, st["engaged"] == true
}

// TestNothingWrittenOutsideTenantScope: after a workload touching every
// kind of state, every KV key and audit subject is tenant scoped or a
// listed exemption.
func TestNothingWrittenOutsideTenantScope(t *testing.T) {
	f := newFixture(t)
	for _, k := range []string{agentKey, otherKey} {
		tn := map[string]string{agentKey: "acme", otherKey: "beta"}[k]
		r := f.do(t, "POST", "/v1/tenants/"+tn+"/intents", k, writeBody)
		id := r.body["intent"].(map[string]any)["id"].(string)
		f.approveAs(t, tn, id, map[string]string{agentKey: opKey, otherKey: betaOpKey}[k])
		f.do(t, "POST", "/v1/tenants/"+tn+"/intents/"+id+"/execute", k, nil)
	}
	f.do(t, "POST", "/v1/tenants/beta/intents", agentKey, writeBody) // a cross-tenant attempt
	exempt := func(name string) bool {
		return slices.ContainsFunc(tenant.GlobalExemptions, func(e tenant.Exemption) bool { return e.Name == name })
	}
	ctx := context.Background()
	for name, kv := range map[string]jetstream.KeyValue{
		tenant.IntentsBucket: f.st.Intents.KeyValue(), tenant.IdempotencyBucket: f.st.Idempotency.KeyValue(), tenant.ControlBucket: f.st.Control.KeyValue(),
		tenant.ApprovalsBucket: f.st.Approvals.KeyValue(),
	} {
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for key := range lister.Keys() {
			n++
			prefix, _, _ := strings.Cut(key, ".")
			if _, err := tenant.Parse(prefix); err != nil && !exempt(key) {
				t.Errorf("bucket %s: key %q is neither tenant scoped nor an exemption", name, key)
			}
		}
		if n == 0 {
			t.Errorf("bucket %s is empty: the workload did not exercise it", name)
		}
	}
	if !exempt(tenant.PrincipalsBucket) {
		t.Error("the key registry is written but not listed as an exemption")
	}
	subjects, err := f.st.Audit.Subjects(ctx, tenant.AuditSubjects)
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range subjects {
		name := strings.TrimPrefix(subj, strings.TrimSuffix(tenant.AuditSubjects, "*"))
		if _, err := tenant.Parse(name); err != nil && !exempt(subj) {
			t.Errorf("audit subject %q is neither tenant scoped nor an exemption", subj)
		}
	}
	if len(subjects) < 3 {
		t.Errorf("audit subjects %v: expected acme, beta and the system chain", subjects)
	}
}

// TestInjectionRejectedBeforeNATS: hostile tenant IDs and idempotency keys
// are refused with 400 before any credential lookup or store write.
func TestInjectionRejectedBeforeNATS(t *testing.T) {
	f := newFixture(t)
	before := f.do(t, "GET", "/v1/tenants/acme/audit/export", opKey, nil).raw
	hostile := []string{"a.b", "a*", "%3E", "a%2Fb", "..", "%2E%2E", "acme%20", "%D0%B0cme" /* Cyrillic а */, "ACME",
		strings.Repeat("a", 64), "acme%00", "-acme", "system"}
	for _, tn := range hostile {
		lookups := f.keys.lookups.Load()
		r := f.do(t, "POST", "/v1/tenants/"+tn+"/intents", agentKey, writeBody)
		if r.code != 400 || errCode(r) != "invalid_tenant" {
			// ".." and "%2E%2E" are cleaned by the router into another path: 404 is also a refusal.
			if !(r.code == 404 && strings.Contains(tn, ".")) && !(r.code == 404 && strings.Contains(tn, "%2F")) {
				t.Errorf("tenant %q: %d %s", tn, r.code, r.raw)
			}
		}
		if f.keys.lookups.Load() != lookups {
			t.Errorf("tenant %q: credentials were looked up", tn)
		}
	}
	for _, key := range []string{"a.b", "*", ">", "a/b", "..", "a b", "ключ", strings.Repeat("k", 129), "a\u0000b", "k\r\nX-Evil: 1"} {
		body := mustJSON(map[string]any{"action": "fs.read", "target": "a", "idempotency_key": key})
		if r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, body); r.code != 400 || errCode(r) != "invalid_request" {
			t.Errorf("idempotency key %q: %d %s", key, r.code, r.raw)
		}
	}
	if after := f.do(t, "GET", "/v1/tenants/acme/audit/export", opKey, nil).raw; !bytes.Equal(before, after) {
		t.Fatal("a rejected request wrote to the audit chain")
	}
}
