package contract

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// The contracts' patterns, as written in contracts/v1 and contracts/v2.
var (
	v1NamePattern = regexp.MustCompile(`^[a-z]+\.[a-z]+$`)
	v2NamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$`)
)

func TestActionNameRules(t *testing.T) {
	tests := []struct {
		name    string
		version string // "" = refused
		says    string // in the refusal
	}{
		{"fs.read", SchemaVersion, ""},
		{"tickets.create", SchemaVersion, ""},
		{"a.b", SchemaVersion, ""},
		{strings.Repeat("a", 32) + "." + strings.Repeat("b", 31), SchemaVersion, ""},   // 64 bytes
		{strings.Repeat("a", 32) + "." + strings.Repeat("b", 32), SchemaVersionV2, ""}, // 65: V1's pattern, v2's length
		{"tickets.create_v2", SchemaVersionV2, ""},
		{"chat.post-message", SchemaVersionV2, ""},
		{"mcp.fs.read_text_file", SchemaVersionV2, ""},
		{"mcp.everything.get-sum", SchemaVersionV2, ""},
		{"s3.put", SchemaVersionV2, ""},
		{"0.1", SchemaVersionV2, ""},
		{"a.b.c", SchemaVersionV2, ""},
		{strings.Repeat("a", 64) + "." + strings.Repeat("b", 63), SchemaVersionV2, ""}, // 128 bytes
		{strings.Repeat("a", 64) + "." + strings.Repeat("b", 64), "", "at most 128"},   // 129 bytes
		{"", "", "at least 3"},
		{"a.", "", "at least 3"},
		{"Fs.read", "", "lower-case"},
		{"tickets.Create", "", "lower-case"},
		{".fs.read", "", "empty segment"},
		{"fs..read", "", "empty segment"},
		{"fs.read.", "", "empty segment"},
		{"fsread", "", "two segments"},
		{"tickets_create", "", "two segments"},
		{"fs._read", "", "starts with"},
		{"-fs.read", "", "starts with"},
		{"fs.-read", "", "starts with"},
		{"fs.réad", "", "lower-case"},
		{"fs.read\u200b", "", "lower-case"},
		{"fs.re ad", "", "lower-case"},
		{"fs.read\x00", "", "lower-case"},
		{"fs/read.x", "", "lower-case"},
		{"fs.*", "", "lower-case"},
		{"*", "", "at least 3"},
		{"A0.x", "", "lower-case"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ActionNameVersion(tt.name); got != tt.version {
				t.Fatalf("ActionNameVersion(%q) = %q, want %q", tt.name, got, tt.version)
			}
			err := CheckActionName(tt.name)
			switch {
			case tt.version != "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.version == "" && (err == nil || !strings.Contains(err.Error(), tt.says)):
				t.Fatalf("CheckActionName(%q) = %v, want it to say %q", tt.name, err, tt.says)
			}
			if IsV1ActionName(tt.name) != (tt.version == SchemaVersion) {
				t.Fatalf("IsV1ActionName(%q) = %v", tt.name, !(tt.version == SchemaVersion))
			}
		})
	}
}

func TestCheckIntentVersion(t *testing.T) {
	tests := []struct {
		version, action string
		ok              bool
	}{
		{"v1", "fs.read", true},
		{"v2", "tickets.create_v2", true},
		{"v2", "mcp.fs.read_text_file", true},
		{"v2", "fs.read", false},           // a V1 name sent as v2
		{"v1", "tickets.create_v2", false}, // a wide name sent as v1
		{"", "fs.read", false},
		{"v3", "tickets.create_v2", false},
		{"v2", "Fs.read", false},
		{"v1", "fs..read", false},
	}
	for _, tt := range tests {
		if err := CheckIntentVersion(tt.version, tt.action); (err == nil) != tt.ok {
			t.Errorf("CheckIntentVersion(%q, %q) = %v, want ok %v", tt.version, tt.action, err, tt.ok)
		}
	}
}

func TestDecodeIntentRequestV2(t *testing.T) {
	body := func(action string) string {
		a, _ := json.Marshal(action)
		return `{"action":` + string(a) + `,"target":"ops","idempotency_key":"k"}`
	}
	for _, name := range []string{"tickets.create_v2", "chat.post-message", "mcp.fs.read_text_file", strings.Repeat("a", 64) + "." + strings.Repeat("b", 63)} {
		if req, err := DecodeIntentRequest([]byte(body(name))); err != nil || req.Action != name {
			t.Errorf("%s: %+v, %v", name, req, err)
		}
	}
	for _, name := range []string{"Tickets.create", ".a.b", "a..b", "a.b.", "tickets", strings.Repeat("a", 64) + "." + strings.Repeat("b", 64), "a.é", "a.b\u202e"} {
		_, err := DecodeIntentRequest([]byte(body(name)))
		var ae *Error
		if !errors.As(err, &ae) || ae.Code != CodeInvalid || !strings.HasPrefix(ae.Message, `field "/action": `) {
			t.Errorf("%q: %v, want %s naming field \"/action\"", name, err, CodeInvalid)
		}
	}
	// A V1 body, or one whose action is not a string, is checked
	// against V1, as before.
	if _, err := DecodeIntentRequest([]byte(`{"action":"fs.read","target":"ops"}`)); err == nil || !strings.Contains(err.Error(), `missing property 'idempotency_key'`) {
		t.Errorf("V1 body without a key: %v", err)
	}
	if _, err := DecodeIntentRequest([]byte(`{"action":7,"target":"ops","idempotency_key":"k"}`)); err == nil || !strings.Contains(err.Error(), `field "/action"`) {
		t.Errorf("an action that is not a string: %v", err)
	}
	// A wide body with another error is refused too, naming that field.
	if _, err := DecodeIntentRequest([]byte(`{"action":"tickets.create_v2","target":"","idempotency_key":"k"}`)); err == nil || !strings.Contains(err.Error(), `field "/target"`) {
		t.Errorf("v2 body with an empty target: %v", err)
	}
}

func TestValidateKeyCreate(t *testing.T) {
	body := func(actions ...string) []byte {
		a, _ := json.Marshal(actions)
		return []byte(`{"name":"bot","role":"agent","tenants":["acme"],"actions":` + string(a) + `}`)
	}
	for _, ok := range [][]string{{"A0"}, {"*"}, {"fs.read"}, {"tickets.create_v2"}, {"A2", "fs.read", "mcp.fs.read_text_file"}} {
		if err := ValidateKeyCreate(body(ok...)); err != nil {
			t.Errorf("%v refused: %v", ok, err)
		}
	}
	for _, bad := range [][]string{{"Tickets.create"}, {"fs.read", "a..b"}, {"A4"}, {"tickets"}, {strings.Repeat("a", 129) + ".b"}} {
		err := ValidateKeyCreate(body(bad...))
		var ae *Error
		if !errors.As(err, &ae) || ae.Code != CodeInvalid || !strings.Contains(ae.Message, `field "/actions/`) {
			t.Errorf("%v: %v, want %s naming the grant", bad, err, CodeInvalid)
		}
	}
	// V1 still refuses a wide grant: only the v2 schema takes it.
	if err := Validate("key_create", body("tickets.create_v2")); err == nil {
		t.Error("key_create v1 accepted a wide name")
	}
}

func TestV2IntentMatchesItsSchema(t *testing.T) {
	in := sampleIntent()
	in.SchemaVersion, in.Action = SchemaVersionV2, "mcp.fs.read_text_file"
	raw, _ := json.Marshal(in)
	if err := ValidateVersion(SchemaVersionV2, "action_intent", raw); err != nil {
		t.Fatalf("a v2 intent: %v\n%s", err, raw)
	}
	if err := Validate("action_intent", raw); err == nil {
		t.Fatal("the V1 schema accepted a v2 intent")
	}
	in.SchemaVersion = SchemaVersion
	raw, _ = json.Marshal(in)
	if err := ValidateVersion(SchemaVersionV2, "action_intent", raw); err == nil {
		t.Fatal("the v2 schema accepted a v1 intent")
	}
	// The hash covers the version: the same intent as v1 and v2 differ.
	a, b := sampleIntent(), sampleIntent()
	b.SchemaVersion = SchemaVersionV2
	ha, _ := a.ComputeHash()
	hb, _ := b.ComputeHash()
	if ha == hb {
		t.Fatal("schema_version is not hashed")
	}
}

// FuzzActionName: the scanner is exactly the contracts' patterns and
// lengths (V1: ^[a-z]+\.[a-z]+$, at most 64 bytes; v2: its pattern, 3..128
// bytes), and the compiled schemas agree.
func FuzzActionName(f *testing.F) {
	for _, s := range []string{"fs.read", "tickets.create_v2", "mcp.fs.read_text_file", "a..b", ".a", "a.", "A.b", "a.b\xff", "a-.b", "_a.b", "0.0", "a.b.c.d", strings.Repeat("a", 70) + ".b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		wantV1 := v1NamePattern.MatchString(name) && len(name) <= MaxV1ActionName
		wantV2 := v2NamePattern.MatchString(name) && len(name) >= MinActionName && len(name) <= MaxActionName
		want := ""
		switch {
		case wantV1:
			want = SchemaVersion
		case wantV2:
			want = SchemaVersionV2
		}
		if wantV1 && !wantV2 {
			t.Fatalf("%q: V1 but not v2", name)
		}
		if got := ActionNameVersion(name); got != want {
			t.Fatalf("ActionNameVersion(%q) = %q, want %q", name, got, want)
		}
		if (CheckActionName(name) == nil) != wantV2 {
			t.Fatalf("CheckActionName(%q) = %v, want ok %v", name, CheckActionName(name), wantV2)
		}
		if !utf8.ValidString(name) {
			return // not JSON text
		}
		a, _ := json.Marshal(name)
		raw := []byte(`{"action":` + string(a) + `,"target":"t","idempotency_key":"k"}`)
		if err := Validate("intent_request", raw); (err == nil) != wantV1 && !strings.ContainsRune(name, 0) {
			t.Fatalf("intent_request v1 on %q: %v, want ok %v", name, err, wantV1)
		}
		if err := ValidateVersion(SchemaVersionV2, "intent_request", raw); (err == nil) != wantV2 && !strings.ContainsRune(name, 0) {
			t.Fatalf("intent_request v2 on %q: %v, want ok %v", name, err, wantV2)
		}
		if _, err := DecodeIntentRequest(raw); (err == nil) != wantV2 && !strings.ContainsRune(name, 0) {
			t.Fatalf("DecodeIntentRequest on %q: %v, want ok %v", name, err, wantV2)
		}
	})
}
