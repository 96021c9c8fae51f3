package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// refCanonicalize is the first, tree-based canonicalizer (decode into any,
// sort map keys, re-encode), kept as the reference the single-pass one is
// checked against.
func refCanonicalize(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data")
	}
	return refAppend(nil, tree)
}

func refAppend(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case json.Number:
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return strconv.AppendInt(b, n, 10), nil
		}
		u, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return nil, err
		}
		return strconv.AppendUint(b, u, 10), nil
	case string:
		return appendString(b, v), nil
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = refAppend(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendString(b, k), ':')
			var err error
			if b, err = refAppend(b, v[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("unexpected %T", v)
}

// checkAgainstReference: whatever the single-pass canonicalizer accepts, the
// reference accepts with the same bytes; whatever the reference refuses,
// it refuses. (It is stricter in two ways, both deliberate: duplicate keys
// and trailing closing brackets are refused.)
func checkAgainstReference(t *testing.T, raw []byte) {
	t.Helper()
	got, err := CanonicalizeJSON(raw)
	want, rerr := refCanonicalize(raw)
	switch {
	case err == nil && rerr != nil:
		t.Fatalf("CanonicalizeJSON(%q) = %q, but the reference refuses it: %v", raw, got, rerr)
	case err == nil && !bytes.Equal(got, want):
		t.Fatalf("CanonicalizeJSON(%q)\n got %q\nwant %q", raw, got, want)
	case err != nil && rerr == nil && !strings.Contains(err.Error(), "duplicate object key") && !strings.Contains(err.Error(), "trailing data"):
		t.Fatalf("CanonicalizeJSON(%q) refused (%v), the reference gives %q", raw, err, want)
	}
}

func TestCanonicalMatchesReference(t *testing.T) {
	for _, s := range []string{
		`{"b":1,"a":[true,null,"x"]}`, ` { "z" : [ 1 , { "y" : "\u00e9", "x" : -0 } ] } `, `"\ud800"`, "\"\xff\xfe\"",
		`"a\"b\\c\/d\b\f\n\r\t\u0000"`, `9223372036854775808`, `-9223372036854775808`, `18446744073709551616`,
		`{"a":{"c":{},"b":[]},"A":0}`, `[[[[]]]]`, `"€😀"`, `{"\u0062":1,"a":2}`, `{"é":1,"e":2,"z":3}`,
	} {
		checkAgainstReference(t, []byte(s))
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `{"b":1,"a":2,"b":3}`, `[1]]`, `01`, `-`, `1.`, `[1,]`, `{"a" 1}`, `tru`, "\"a\x01\""} {
		if got, err := CanonicalizeJSON([]byte(bad)); err == nil {
			t.Errorf("CanonicalizeJSON(%q) = %q, want an error", bad, got)
		}
	}
	deep := strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)
	if _, err := CanonicalizeJSON([]byte(deep)); err == nil {
		t.Error("nesting deeper than maxDepth accepted")
	}
}

func FuzzCanonicalReference(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[true,null,"x"]}`, `"\u2028"`, `{"a":{"a":{}}}`, `-0`, `"\ud800"`, `{"b":{"d":1,"c":2},"a":"\u00e9"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkAgainstReference(t, raw) })
}

func sampleRecord() AuditRecord {
	return AuditRecord{
		SchemaVersion: SchemaVersion, Tenant: "acme", Seq: 42, Kind: "gate.allowed", CorrelationID: "int_1",
		Actor: "agent-1", RequestID: "req-1", Time: time.Date(2026, 11, 25, 1, 2, 3, 456789000, time.UTC),
		Payload:     json.RawMessage(`{"z":[1,2],"a":{"y":"<&>","x":null}}`),
		PayloadHash: strings.Repeat("a", 64), PrevHash: ZeroHash, Hash: strings.Repeat("b", 64),
	}
}

func checkRecord(t *testing.T, r AuditRecord) {
	t.Helper()
	raw, merr := json.Marshal(r)
	var want []byte
	var rerr error
	if merr == nil {
		want, rerr = refCanonicalize(raw)
	}
	got, err := r.AppendCanonical(nil)
	switch {
	case merr != nil || rerr != nil:
		if err == nil {
			t.Fatalf("AppendCanonical(%+v) = %q, generic encoding fails: %v %v", r, got, merr, rerr)
		}
	case err != nil && strings.Contains(err.Error(), "duplicate object key"):
		// Stricter than the reference on purpose (see checkAgainstReference).
	case err != nil:
		t.Fatalf("AppendCanonical(%+v): %v; generic gives %q", r, err, want)
	case !bytes.Equal(got, want):
		t.Fatalf("AppendCanonical\n got %q\nwant %q", got, want)
	default:
		// Seal: the hash over the record without it, spliced in place.
		s := r
		sealed, err := s.Seal()
		r.Hash = ""
		wantHash, herr := HashOf(r)
		r.Hash = s.Hash
		wantSealed, cerr := Canonical(r)
		if err != nil || herr != nil || cerr != nil || s.Hash != wantHash || !bytes.Equal(sealed, wantSealed) {
			t.Fatalf("Seal = %q, %s, %v\nwant %q, %s (%v %v)", sealed, s.Hash, err, wantSealed, wantHash, herr, cerr)
		}
	}
}

func TestAuditRecordAppendCanonical(t *testing.T) {
	base := sampleRecord()
	variants := []func(*AuditRecord){
		func(*AuditRecord) {},
		func(r *AuditRecord) { r.Hash, r.RequestID = "", "" },
		func(r *AuditRecord) { r.Payload = nil },
		func(r *AuditRecord) { r.Payload = json.RawMessage(`"x"`) },
		func(r *AuditRecord) { r.Actor = "a\"\\\n\x00\u2028é😀\xff" },
		func(r *AuditRecord) { r.Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)) },
		func(r *AuditRecord) { r.Time = time.Time{} },
		func(r *AuditRecord) { r.Seq = 1<<64 - 1 },
		func(r *AuditRecord) { r.Payload = json.RawMessage(`{"a":1.5}`) },
		func(r *AuditRecord) { r.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	for i, v := range variants {
		r := base
		v(&r)
		t.Run(strconv.Itoa(i), func(t *testing.T) { checkRecord(t, r) })
	}
	h, err := base.ComputeHash()
	if err != nil {
		t.Fatal(err)
	}
	r := base
	r.Hash = ""
	if want, _ := HashOf(r); h != want {
		t.Fatalf("ComputeHash = %s, HashOf = %s", h, want)
	}
}

func FuzzAuditRecordAppendCanonical(f *testing.F) {
	f.Add("acme", "gate.allowed", "agent-1", "req", uint64(7), int64(1764000000123456789), []byte(`{"b":1,"a":"x"}`))
	f.Add("", "", "\xff\"\\", "", uint64(0), int64(0), []byte(`null`))
	f.Fuzz(func(t *testing.T, tn, kind, actor, req string, seq uint64, nanos int64, payload []byte) {
		r := sampleRecord()
		r.Tenant, r.Kind, r.Actor, r.RequestID, r.Seq, r.Payload = tn, kind, actor, req, seq, payload
		r.Time = time.Unix(0, nanos).UTC()
		checkRecord(t, r)
	})
}
