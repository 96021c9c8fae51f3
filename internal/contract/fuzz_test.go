package contract

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeRequestBodies: every other untrusted request body (kill switch,
// approval decision, key request, resolve request) is either refused with
// code invalid (a 400) or accepted, and what is accepted re-encodes to a
// body that is accepted again.
func FuzzDecodeRequestBodies(f *testing.F) {
	for _, s := range []string{
		`{"engaged":true,"reason":"x"}`, `{"decision":"approve","reason":"ok"}`,
		`{"name":"bot","role":"agent","tenants":["acme"],"actions":["A0"]}`, `{"outcome":"failed","reason":"r"}`,
		`{"engaged":true,"engaged":false}`, `{"reason":"\u0000"}`, "\xff", `[[[[[[`,
	} {
		for kind := range uint8(4) {
			f.Add(kind, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, raw []byte) {
		var (
			v   any
			err error
		)
		decode := func(b []byte) (any, error) {
			switch kind % 5 {
			case 0:
				return DecodeKillSwitchRequest(b)
			case 1:
				return DecodeApprovalDecision(b)
			case 2:
				return nil, Validate("key_request", b)
			case 3:
				return DecodeKeyConsent(b)
			default:
				return nil, Validate("resolve_request", b)
			}
		}
		if v, err = decode(raw); err != nil {
			if ErrorCode(err) != CodeInvalid {
				t.Fatalf("error with code %s: %v", ErrorCode(err), err)
			}
			return
		}
		if v == nil {
			return // schema-validated only; the handler decodes the known shape
		}
		again, merr := json.Marshal(v)
		if merr != nil {
			t.Fatal(merr)
		}
		if _, err := decode(again); err != nil {
			t.Fatalf("re-encoded body refused: %v\n%s", err, again)
		}
	})
}
