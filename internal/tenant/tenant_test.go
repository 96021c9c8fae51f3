package tenant

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"acme", true},
		{"a", true},
		{"0", true},
		{"acme-corp-2", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-acme", false},
		{"Acme", false},
		{"ac.me", false},
		{"acme.*", false},
		{"*", false},
		{">", false},
		{"ac me", false},
		{"ac/me", false},
		{"..", false},
		{"acme\x00", false},
		{"аcme", false}, // Cyrillic а: a look-alike
		{"acme_corp", false},
		{"acme\n", false},
	}
	for _, tt := range tests {
		id, err := Parse(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("Parse(%q) err = %v, want ok=%t", tt.in, err, tt.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) err = %v, want ErrInvalid", tt.in, err)
		}
		if tt.ok && id.String() != tt.in {
			t.Errorf("Parse(%q) = %q", tt.in, id)
		}
	}
}

func TestZeroIDFailsClosed(t *testing.T) {
	var id ID
	if !errors.Is(id.Check(), ErrMissing) {
		t.Fatalf("zero ID Check = %v, want ErrMissing", id.Check())
	}
	if _, err := FromContext(t.Context()); !errors.Is(err, ErrMissing) {
		t.Fatalf("FromContext(empty) = %v, want ErrMissing", err)
	}
	ctx := WithContext(t.Context(), MustParse("acme"))
	if got, err := FromContext(ctx); err != nil || got.String() != "acme" {
		t.Fatalf("FromContext = %v, %v", got, err)
	}
}

func TestUnmarshalTextValidates(t *testing.T) {
	var id ID
	if err := id.UnmarshalText([]byte("a.b")); err == nil {
		t.Fatal("UnmarshalText accepted a dotted tenant")
	}
	if err := id.UnmarshalText([]byte("ok-1")); err != nil || id.String() != "ok-1" {
		t.Fatalf("UnmarshalText(ok-1) = %v, %q", err, id)
	}
}

func TestIdentifiers(t *testing.T) {
	for _, bad := range []string{"", "a.b", "a*", "a>", "a/b", "..", "a b", strings.Repeat("k", 129), "ключ"} {
		if ValidIdempotencyKey(bad) == nil {
			t.Errorf("ValidIdempotencyKey(%q) accepted", bad)
		}
	}
	for _, good := range []string{"k", "K-1_x", strings.Repeat("k", 128), "550e8400-e29b-41d4-a716-446655440000"} {
		if err := ValidIdempotencyKey(good); err != nil {
			t.Errorf("ValidIdempotencyKey(%q) = %v", good, err)
		}
	}
	for _, bad := range []string{"", "IN_1", "in.1", "in*", strings.Repeat("a", 65)} {
		if ValidIntentID(bad) == nil {
			t.Errorf("ValidIntentID(%q) accepted", bad)
		}
	}
}

func TestNamesAreTenantScoped(t *testing.T) {
	a := MustParse("acme")
	if got := AuditSubject(a); got != "exoarmur.v1.audit.acme" {
		t.Errorf("AuditSubject = %q", got)
	}
	if got, err := TenantFromAuditSubject(AuditSubject(a)); err != nil || got != a {
		t.Errorf("TenantFromAuditSubject round trip = %v, %v", got, err)
	}
	if _, err := TenantFromAuditSubject("exoarmur.v1.audit.a.b"); err == nil {
		t.Error("TenantFromAuditSubject accepted a dotted tenant")
	}
	if got := IntentKey(a, "in_1"); got != "acme.in_1" {
		t.Errorf("IntentKey = %q", got)
	}
	if got := IdempotencyKey(a, "k1"); got != "acme.k1" {
		t.Errorf("IdempotencyKey = %q", got)
	}
}

// FuzzTenantParse: whatever Parse accepts contains only [a-z0-9-], so it
// can never add a token, a wildcard or a separator to a subject or key.
func FuzzTenantParse(f *testing.F) {
	for _, s := range []string{"acme", "a.b", "*", ">", "", "Acme", "a-b", "..", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		if len(s) > MaxLen || strings.ContainsAny(s, ".*> /\\\x00") || strings.HasPrefix(s, "-") {
			t.Fatalf("Parse accepted %q", s)
		}
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				t.Fatalf("Parse accepted rune %q in %q", r, s)
			}
		}
		if strings.Count(AuditSubject(id), ".") != 3 {
			t.Fatalf("subject %q has extra tokens", AuditSubject(id))
		}
	})
}
