package api_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// TestAgentsSeeOnlyTheirOwn: an agent key granted only fs.read, in the
// tenant where another agent read a file, finds nothing of that execution:
// the intent is not in its listing (whatever the filters), reads as 404
// not_found, its audit list holds only the records of its own intent, and
// the tenant's whole audit (export, verify), which holds the content the
// other agent read, is refused (403 forbidden: it is for operators, admins
// and auditors). Each refusal is audited in the tenant's chain.
func TestAgentsSeeOnlyTheirOwn(t *testing.T) {
	f := newFixture(t)
	const secret = "SECRET-CONTENT-4711"
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, mustJSON(map[string]any{"action": "fs.read", "target": "theirs.txt",
		"params": map[string]string{"reply": secret}, "idempotency_key": "theirs"}))
	if r.code != 201 {
		t.Fatalf("propose = %d %s", r.code, r.raw)
	}
	theirs := r.body["intent"].(map[string]any)["id"].(string)
	if r := f.do(t, "POST", "/v1/tenants/acme/intents/"+theirs+"/execute", agentKey, nil); r.code != 200 || !bytes.Contains(r.raw, []byte(secret)) {
		t.Fatalf("execute = %d %s", r.code, r.raw)
	}
	r = f.do(t, "POST", "/v1/tenants/acme/intents", fsReadKey, mustJSON(map[string]any{"action": "fs.read", "target": "mine.txt", "idempotency_key": "mine"}))
	if r.code != 201 {
		t.Fatalf("propose own = %d %s", r.code, r.raw)
	}
	mine := r.body["intent"].(map[string]any)["id"].(string)
	if r := f.do(t, "POST", "/v1/tenants/acme/intents/"+mine+"/execute", fsReadKey, nil); r.code != 200 {
		t.Fatalf("execute own = %d %s", r.code, r.raw)
	}
	forbiddenBefore := f.chainCount(t, "acme", "access.forbidden")

	leaks := func(t *testing.T, what string, r resp) {
		t.Helper()
		if bytes.Contains(r.raw, []byte(secret)) || bytes.Contains(r.raw, []byte(theirs)) || bytes.Contains(r.raw, []byte("theirs.txt")) {
			t.Fatalf("%s leaks the other agent's execution: %d %s", what, r.code, r.raw)
		}
	}
	for _, q := range []string{"", "?proposer=key_agent", "?action=fs.read", "?state=succeeded", "?state=in_doubt", "?limit=500"} {
		r := f.do(t, "GET", "/v1/tenants/acme/intents"+q, fsReadKey, nil)
		if r.code != 200 {
			t.Fatalf("list%s = %d %s", q, r.code, r.raw)
		}
		leaks(t, "list"+q, r)
		if q == "" && !bytes.Contains(r.raw, []byte(mine)) {
			t.Fatalf("own intent not listed: %s", r.raw)
		}
	}
	r = f.do(t, "GET", "/v1/tenants/acme/intents/"+theirs, fsReadKey, nil)
	if r.code != 404 || errCode(r) != "not_found" {
		t.Fatalf("get the other's intent = %d %s, want 404 not_found", r.code, r.raw)
	}
	leaks(t, "get", r)
	missing := f.do(t, "GET", "/v1/tenants/acme/intents/in_00000000000000000000000000000000", fsReadKey, nil)
	if missing.code != 404 || !bytes.Equal(bytes.Split(missing.raw, []byte(`"request_id"`))[0], bytes.Split(r.raw, []byte(`"request_id"`))[0]) {
		t.Fatalf("another's intent (%s) does not read as a missing one (%s)", r.raw, missing.raw)
	}
	if r := f.do(t, "GET", "/v1/tenants/acme/intents/"+mine, fsReadKey, nil); r.code != 200 || r.body["state"] != "succeeded" {
		t.Fatalf("get own intent = %d %s", r.code, r.raw)
	}
	// Its audit list holds the records of its own intent, and only those,
	// whatever the window.
	for _, q := range []string{"", "?after=0&limit=1000", "?limit=1", "?after=3&limit=3"} {
		r := f.do(t, "GET", "/v1/tenants/acme/audit"+q, fsReadKey, nil)
		if r.code != 200 || r.body["scope"] != "own" {
			t.Fatalf("audit%s = %d %s", q, r.code, r.raw)
		}
		leaks(t, "audit"+q, r)
		for _, rec := range r.body["records"].([]any) {
			if c := rec.(map[string]any)["correlation_id"]; c != mine {
				t.Fatalf("audit%s holds a record of %v", q, c)
			}
		}
	}
	var own []string
	for after := 0.0; ; {
		r := f.do(t, "GET", "/v1/tenants/acme/audit?limit=2&after="+strconv.Itoa(int(after)), fsReadKey, nil)
		for _, rec := range r.body["records"].([]any) {
			own = append(own, rec.(map[string]any)["kind"].(string))
		}
		next := r.body["next_after"].(float64)
		if next-after < 2 {
			break
		}
		after = next
	}
	if strings.Join(own, " ") != "intent.proposed gate.allowed execution.started execution.succeeded" {
		t.Fatalf("own records paged through = %v", own)
	}
	// One intent's records: its own intent's, none of the other's.
	r = f.do(t, "GET", "/v1/tenants/acme/audit?intent="+mine, fsReadKey, nil)
	if recs, _ := r.body["records"].([]any); r.code != 200 || len(recs) != 4 || r.body["intent"] != mine {
		t.Fatalf("audit of its own intent = %d %s", r.code, r.raw)
	}
	r = f.do(t, "GET", "/v1/tenants/acme/audit?intent="+theirs, fsReadKey, nil)
	if recs, _ := r.body["records"].([]any); r.code != 200 || len(recs) != 0 {
		t.Fatalf("audit of the other's intent = %d %s", r.code, r.raw)
	}
	if bytes.Contains(r.raw, []byte(secret)) || bytes.Contains(r.raw, []byte("theirs.txt")) { // the ID is its own query's echo
		t.Fatalf("audit of the other's intent leaks: %s", r.raw)
	}
	if r := f.do(t, "GET", "/v1/tenants/acme/audit?intent="+theirs, auditorKey, nil); !bytes.Contains(r.raw, []byte(secret)) {
		t.Fatalf("auditor's audit of the intent = %d %s", r.code, r.raw)
	}
	// The tenant's whole audit is refused.
	for _, p := range []string{"/audit/export", "/audit/verify"} {
		r := f.do(t, "GET", "/v1/tenants/acme"+p, fsReadKey, nil)
		leaks(t, p, r)
		if r.code != 403 || errCode(r) != "forbidden" || !strings.Contains(r.body["error"].(map[string]any)["message"].(string), "operators, admins and auditors") {
			t.Fatalf("%s = %d %s, want 403 forbidden naming who reads the tenant's audit", p, r.code, r.raw)
		}
	}
	// The other agent's intent cannot be executed or approved either.
	if r := f.do(t, "POST", "/v1/tenants/acme/intents/"+theirs+"/execute", fsReadKey, nil); r.code == 200 {
		t.Fatalf("execute the other's intent = %d %s", r.code, r.raw)
	} else {
		leaks(t, "execute", r)
	}
	// 1 get, 1 export and 1 verify refused, each audited.
	if got := f.chainCount(t, "acme", "access.forbidden") - forbiddenBefore; got != 3 {
		t.Fatalf("%d refusals audited, want 3", got)
	}
	// The tenant's overseers see everything, as before.
	for _, key := range []string{opKey, adminKey, auditorKey} {
		if r := f.do(t, "GET", "/v1/tenants/acme/intents/"+theirs, key, nil); r.code != 200 || !bytes.Contains(r.raw, []byte(secret)) {
			t.Fatalf("%s get = %d %s", key, r.code, r.raw)
		}
		if r := f.do(t, "GET", "/v1/tenants/acme/intents", key, nil); r.code != 200 || !bytes.Contains(r.raw, []byte(theirs)) || !bytes.Contains(r.raw, []byte(mine)) {
			t.Fatalf("%s list = %d %s", key, r.code, r.raw)
		}
		if r := f.do(t, "GET", "/v1/tenants/acme/audit/export", key, nil); r.code != 200 || !bytes.Contains(r.raw, []byte(secret)) {
			t.Fatalf("%s export = %d %s", key, r.code, r.raw)
		}
	}
}

// TestAuditorReadsButNeverActs: an auditor reads every intent, the
// approvals, the tenant's kill switch and the tenant's whole audit (list,
// export, verify); it may not propose, execute, approve or deny, resolve,
// flip a switch or manage keys (403 forbidden, audited), and nothing
// changes.
func TestAuditorReadsButNeverActs(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, writeBody)
	id := r.body["intent"].(map[string]any)["id"].(string)
	reads := []struct{ path string }{
		{"/v1/tenants/acme/intents"}, {"/v1/tenants/acme/intents/" + id}, {"/v1/tenants/acme/intents?state=in_doubt"},
		{"/v1/tenants/acme/approvals"}, {"/v1/tenants/acme/killswitch"},
		{"/v1/tenants/acme/audit"}, {"/v1/tenants/acme/audit/export"}, {"/v1/tenants/acme/audit/verify"},
	}
	for _, rd := range reads {
		if r := f.do(t, "GET", rd.path, auditorKey, nil); r.code != 200 {
			t.Errorf("auditor GET %s = %d %s", rd.path, r.code, r.raw)
		}
	}
	if r := f.do(t, "GET", "/v1/tenants/acme/audit/verify", auditorKey, nil); r.body["pass"] != true {
		t.Errorf("auditor verify = %s", r.raw)
	}
	if r := f.do(t, "GET", "/v1/tenants/acme/audit", auditorKey, nil); !bytes.Contains(r.raw, []byte(`"intent.proposed"`)) {
		t.Errorf("auditor audit list holds no proposal: %s", r.raw)
	}
	acts := []struct {
		name, method, path string
		body               []byte
	}{
		{"propose", "POST", "/v1/tenants/acme/intents", mustJSON(map[string]any{"action": "fs.read", "target": "a.txt", "idempotency_key": "aud"})},
		{"execute", "POST", "/v1/tenants/acme/intents/" + id + "/execute", nil},
		{"approve", "POST", "/v1/tenants/acme/intents/" + id + "/approvals", mustJSON(map[string]string{"decision": "approve", "reason": "a"})},
		{"deny", "POST", "/v1/tenants/acme/intents/" + id + "/approvals", mustJSON(map[string]string{"decision": "deny", "reason": "a"})},
		{"resolve", "POST", "/v1/tenants/acme/intents/" + id + "/resolve", mustJSON(map[string]string{"outcome": "failed", "reason": "a"})},
		{"flip the tenant switch", "PUT", "/v1/tenants/acme/killswitch", mustJSON(map[string]any{"engaged": true, "reason": "a"})},
		{"read the global switch", "GET", "/v1/killswitch", nil},
		{"flip the global switch", "PUT", "/v1/killswitch", mustJSON(map[string]any{"engaged": true, "reason": "a"})},
		{"create a key", "POST", "/v1/keys", mustJSON(map[string]any{"name": "n", "role": "agent", "tenants": []string{"acme"}, "actions": []string{"A0"}})},
		{"create an operator key", "POST", "/v1/keys", mustJSON(map[string]any{"name": "n", "role": "operator", "tenants": []string{"acme"}, "actions": []string{"A0"}})},
		{"list keys", "GET", "/v1/keys", nil},
		{"revoke a key", "DELETE", "/v1/keys/key_agent", nil},
		{"read metrics", "GET", "/metrics", nil},
	}
	for _, a := range acts {
		t.Run(a.name, func(t *testing.T) {
			before := f.stateSnapshot(t)
			forbidden := f.chainCount(t, "acme", "access.forbidden") + f.systemCount(t, "access.forbidden")
			r := f.do(t, a.method, a.path, auditorKey, a.body)
			if r.code != 403 || errCode(r) != "forbidden" {
				t.Fatalf("auditor %s = %d %s, want 403 forbidden", a.name, r.code, r.raw)
			}
			if after := f.stateSnapshot(t); after != before {
				t.Fatalf("state changed:\n%s\n---\n%s", before, after)
			}
			if got := f.chainCount(t, "acme", "access.forbidden") + f.systemCount(t, "access.forbidden"); got != forbidden+1 {
				t.Fatalf("refusal audited %d times, want once", got-forbidden)
			}
		})
	}
	if f.exec.runs != 0 {
		t.Fatalf("executor ran %d times", f.exec.runs)
	}
}
