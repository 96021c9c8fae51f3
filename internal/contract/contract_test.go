package contract

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{`{ "z" : { "y": [ 3, 2, {"d":null,"c":true} ] } , "a":false}`, `{"a":false,"z":{"y":[3,2,{"c":true,"d":null}]}}`},
		{`"<>&"`, `"<>&"`},
		{`"é€😀"`, `"é€😀"`},
		{`"\u00e9"`, `"é"`},
		{`"tab\tnl\nq\"bs\\"`, `"tab\tnl\nq\"bs\\"`},
		{`"\u0001\u001f"`, `"\u0001\u001f"`},
		{`"\u007f"`, "\"\x7f\""},
		{`18446744073709551615`, `18446744073709551615`},
		{`-42`, `-42`},
		{`[]`, `[]`},
		{`{}`, `{}`},
	}
	for _, tt := range tests {
		got, err := CanonicalizeJSON([]byte(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("CanonicalizeJSON(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{`1.5`, `1e3`, `{`, `{"a":1} x`, ``} {
		if got, err := CanonicalizeJSON([]byte(bad)); err == nil {
			t.Errorf("CanonicalizeJSON(%q) = %s, want error", bad, got)
		}
	}
}

func sampleIntent() ActionIntent {
	in := ActionIntent{SchemaVersion: SchemaVersion, ID: "in_0123", Tenant: "acme", Action: "fs.write", Class: A1, Target: "a/b.txt",
		Params: map[string]string{"content": "hi"}, IdempotencyKey: "k-1", Justification: "why", Proposer: "key_1", CreatedAt: t0}
	in.Hash, _ = in.ComputeHash()
	return in
}

func TestIntentHashBindsEveryField(t *testing.T) {
	base := sampleIntent()
	h := base.Hash
	if again, _ := base.ComputeHash(); again != h {
		t.Fatal("ComputeHash depends on the Hash field")
	}
	mutations := []func(*ActionIntent){
		func(i *ActionIntent) { i.Tenant = "acmf" },
		func(i *ActionIntent) { i.Target = "a/b.txu" },
		func(i *ActionIntent) { i.Params = map[string]string{"content": "hj"} },
		func(i *ActionIntent) { i.Class = A3 },
		func(i *ActionIntent) { i.CreatedAt = t0.Add(time.Nanosecond) },
		func(i *ActionIntent) { i.Proposer = "key_2" },
		func(i *ActionIntent) { i.Justification = "" },
	}
	for i, m := range mutations {
		c := base
		m(&c)
		if got, _ := c.ComputeHash(); got == h {
			t.Errorf("mutation %d does not change the hash", i)
		}
	}
}

// TestGoTypesMatchSchemas: every V1 Go type, filled in, validates against
// its frozen schema, so the two cannot drift apart.
func TestGoTypesMatchSchemas(t *testing.T) {
	in := sampleIntent()
	dec := Decision{SchemaVersion: SchemaVersion, Tenant: "acme", IntentID: in.ID, IntentHash: in.Hash, Verdict: Deny,
		Reasons: []string{"policy_denied"}, Checks: []CheckResult{{Name: "tenant", Outcome: Pass}, {Name: "policy", Outcome: Fail, Reason: "policy_denied", Detail: "fs-outside-sandbox"}},
		PolicyHash: in.Hash, DecidedAt: t0}
	payload, _ := Canonical(dec)
	rec := AuditRecord{SchemaVersion: SchemaVersion, Tenant: "acme", Seq: 1, Kind: "gate.blocked", CorrelationID: in.ID, Actor: "key_1",
		RequestID: "req_1", Time: t0, Payload: payload, PayloadHash: Hash(payload), PrevHash: ZeroHash}
	rec.Hash, _ = rec.ComputeHash()
	res := ExecutionResult{SchemaVersion: SchemaVersion, Tenant: "acme", IntentID: in.ID, IdempotencyKey: "k-1", Status: StatusSucceeded,
		Output: map[string]string{"bytes": "2"}, StartedAt: t0, FinishedAt: t0.Add(time.Second)}
	rep := ReplayReport{SchemaVersion: SchemaVersion, Pass: true, Records: 1, Decisions: 1, DecisionsMatched: 1,
		Tenants:    []ReplayTenant{{Tenant: "acme", Records: 1, Decisions: 1, ChainOK: true, HeadSeq: 1, HeadHash: rec.Hash}},
		Mismatches: []ReplayMismatch{}}
	rep.ReplayHash, _ = rep.ComputeHash()
	proof := ProofBundle{SchemaVersion: SchemaVersion, Tenant: "acme", Records: 1, HeadSeq: 1, HeadHash: rec.Hash, ReplayPass: true, ReplayHash: rep.ReplayHash}
	proof.ProofHash, _ = proof.ComputeHash()
	req := IntentRequest{Action: "fs.write", Target: "a", Params: map[string]string{"content": "x"}, IdempotencyKey: "k", Justification: "j"}
	for name, v := range map[string]any{
		"intent_request": req, "action_intent": in, "decision": dec, "audit_record": rec,
		"execution_result": res, "replay_report": rep, "proof_bundle": proof,
	} {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(name, raw); err != nil {
			t.Errorf("%s does not validate against its schema: %v\n%s", name, err, raw)
		}
	}
	// And a wrong one does not.
	bad, _ := json.Marshal(ActionIntent{SchemaVersion: "v2", Tenant: "ACME"})
	if err := Validate("action_intent", bad); err == nil {
		t.Error("an invalid intent validated")
	}
}

func TestDecodeIntentRequest(t *testing.T) {
	tests := []struct {
		name, body string
		field      string // must appear in the message; "" = valid
	}{
		{"valid", `{"action":"fs.write","target":"a.txt","params":{"content":"x"},"idempotency_key":"k-1","justification":"j"}`, ""},
		{"valid minimal", `{"action":"fs.read","target":"a","idempotency_key":"k"}`, ""},
		{"missing action", `{"target":"a","idempotency_key":"k"}`, `"/"`},
		{"missing idempotency key", `{"action":"fs.read","target":"a"}`, `"/"`},
		{"unknown field", `{"action":"fs.read","target":"a","idempotency_key":"k","evil":true}`, `"/"`},
		{"duplicate key", `{"action":"fs.read","action":"fs.delete","target":"a","idempotency_key":"k"}`, `"/action"`},
		{"wrong type", `{"action":"fs.read","target":7,"idempotency_key":"k"}`, `"/target"`},
		{"param not a string", `{"action":"fs.read","target":"a","idempotency_key":"k","params":{"content":1}}`, `"/params/content"`},
		{"bad param name", `{"action":"fs.read","target":"a","idempotency_key":"k","params":{"Bad":"x"}}`, `"/params/Bad"`},
		{"key with dot", `{"action":"fs.read","target":"a","idempotency_key":"a.b"}`, `"/idempotency_key"`},
		{"key with star", `{"action":"fs.read","target":"a","idempotency_key":"*"}`, `"/idempotency_key"`},
		{"key with gt", `{"action":"fs.read","target":"a","idempotency_key":">"}`, `"/idempotency_key"`},
		{"key with space", `{"action":"fs.read","target":"a","idempotency_key":"a b"}`, `"/idempotency_key"`},
		{"key with slash", `{"action":"fs.read","target":"a","idempotency_key":"a/b"}`, `"/idempotency_key"`},
		{"key too long", `{"action":"fs.read","target":"a","idempotency_key":"` + strings.Repeat("k", 129) + `"}`, `"/idempotency_key"`},
		{"empty target", `{"action":"fs.read","target":"","idempotency_key":"k"}`, `"/target"`},
		{"NUL in target", `{"action":"fs.read","target":"a\u0000b","idempotency_key":"k"}`, `"/target"`},
		{"invalid UTF-8", "{\"action\":\"fs.read\",\"target\":\"\xff\",\"idempotency_key\":\"k\"}", "UTF-8"},
		{"trailing data", `{"action":"fs.read","target":"a","idempotency_key":"k"} {}`, "after"},
		{"not an object", `[1,2]`, `"/"`},
		{"empty", ``, "empty"},
		{"truncated", `{"action":`, "JSON"},
		{"deep nesting", `{"params":` + strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 41), "nesting"},
		{"huge param", `{"action":"fs.write","target":"a","idempotency_key":"k","params":{"content":"` + strings.Repeat("x", 300000) + `"}}`, `"/params/content"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeIntentRequest([]byte(tt.body))
			if tt.field == "" {
				if err != nil {
					t.Fatalf("valid body rejected: %v", err)
				}
				if req.Action == "" || req.IdempotencyKey == "" {
					t.Fatalf("decoded %+v", req)
				}
				return
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.Code != CodeInvalid {
				t.Fatalf("err = %v, want code %s", err, CodeInvalid)
			}
			if !strings.Contains(ae.Message, tt.field) {
				t.Fatalf("message %q does not name %s", ae.Message, tt.field)
			}
		})
	}
}

func TestErrorIs(t *testing.T) {
	err := Wrap(CodeNotFound, "nope", errors.New("cause"))
	if !errors.Is(err, &Error{Code: CodeNotFound}) || errors.Is(err, &Error{Code: CodeConflict}) {
		t.Fatal("errors.Is does not match by code")
	}
	if ErrorCode(err) != CodeNotFound || ErrorCode(errors.New("x")) != CodeInternal {
		t.Fatal("ErrorCode")
	}
}

func FuzzDecodeIntentRequest(f *testing.F) {
	f.Add([]byte(`{"action":"fs.write","target":"a.txt","params":{"content":"x"},"idempotency_key":"k-1"}`))
	f.Add([]byte(`{"action":"fs.read","action":"x"}`))
	f.Add([]byte(`{"params":{"a":{"b":[1,2,{"c":null}]}}}`))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := DecodeIntentRequest(raw)
		if err != nil {
			if ErrorCode(err) != CodeInvalid {
				t.Fatalf("error with code %s: %v", ErrorCode(err), err)
			}
			return
		}
		again, _ := json.Marshal(req)
		req2, err := DecodeIntentRequest(again)
		if err != nil {
			t.Fatalf("re-encoded request rejected: %v\n%s", err, again)
		}
		a, _ := Canonical(req)
		b, _ := Canonical(req2)
		if string(a) != string(b) {
			t.Fatalf("round trip changed the request:\n%s\n%s", a, b)
		}
	})
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[true,null,"x"]}`, `"\u2028"`, `{"a":{"a":{}}}`, `-0`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := CanonicalizeJSON(raw)
		if err != nil {
			return
		}
		if !json.Valid(c) {
			t.Fatalf("canonical output is not JSON: %q", c)
		}
		c2, err := CanonicalizeJSON(c)
		if err != nil || string(c2) != string(c) {
			t.Fatalf("not idempotent: %q -> %q (%v)", c, c2, err)
		}
	})
}
