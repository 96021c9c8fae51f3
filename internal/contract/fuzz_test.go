package contract

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDecodeRequestBodies: every other untrusted request body (kill switch,
// approval decision, key request, resolve request, policy activation) is either refused with
// code invalid (a 400) or accepted, and what is accepted re-encodes to a
// body that is accepted again.
func FuzzDecodeRequestBodies(f *testing.F) {
	for _, s := range []string{
		`{"engaged":true,"reason":"x"}`, `{"decision":"approve","reason":"ok"}`,
		`{"name":"bot","role":"agent","tenants":["acme"],"actions":["A0"]}`, `{"outcome":"failed","reason":"r"}`,
		`{"engaged":true,"engaged":false}`, `{"reason":"\u0000"}`, "\xff", `[[[[[[`,
		`{"reason":"r","files":[{"name":"a.cedar","source":"permit (principal, action, resource);"}]}`, `{"reason":" ","files":[]}`,
	} {
		for kind := range uint8(6) {
			f.Add(kind, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, raw []byte) {
		var (
			v   any
			err error
		)
		decode := func(b []byte) (any, error) {
			switch kind % 6 {
			case 0:
				return DecodeKillSwitchRequest(b)
			case 1:
				return DecodeApprovalDecision(b)
			case 2:
				return nil, Validate("key_request", b)
			case 3:
				return DecodeKeyConsent(b)
			case 5:
				return DecodePolicyActivation(b)
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

// FuzzDecodeCheckpoint: a checkpoint line of an export or a witness file
// (untrusted) decodes or is refused, never panics; what decodes is
// well-formed and signs the same bytes when encoded again.
func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add([]byte(`{"key_id":"0123456789abcdef","record_hash":"` + strings.Repeat("a", 64) + `","schema_version":"v1","seq":3,"signature":"c2ln","tenant":"acme","time":"2026-01-01T00:00:00Z","type":"checkpoint"}`))
	f.Add([]byte(`{"type":"checkpoint"}`))
	f.Add([]byte(`{"actor":"a","kind":"x","type":"checkpoint","extra":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		cp, err := DecodeCheckpoint(raw)
		if err != nil {
			return
		}
		if cp.Type != CheckpointType || cp.Seq == 0 || len(cp.RecordHash) != 64 || cp.Signature == "" {
			t.Fatalf("decoded a malformed checkpoint: %+v", cp)
		}
		b, err := Canonical(cp)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeCheckpoint(b)
		if err != nil || again != cp {
			t.Fatalf("re-encoded checkpoint decodes as %+v, %v", again, err)
		}
		if !IsCheckpointLine(b) {
			t.Fatalf("its canonical form is not a checkpoint line: %s", b)
		}
		s1, err1 := cp.SignedBytes()
		s2, err2 := again.SignedBytes()
		if err1 != nil || err2 != nil || !bytes.Equal(s1, s2) {
			t.Fatal("the signed bytes change across a round trip")
		}
	})
}
