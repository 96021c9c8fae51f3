package contract

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkJSONLen fails unless JSONLen(s) bounds both encodings of s that
// records are stored in (canonical; encoding/json without HTML escaping), and TruncateJSON(s, n) is the longest prefix of s
// within n, cut between characters.
func checkJSONLen(t testing.TB, s string) {
	t.Helper()
	n := JSONLen(s)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the gate stores its bucket values
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	marshaled := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	canonical, err := Canonical(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(marshaled) > n || len(canonical) > n {
		t.Fatalf("JSONLen(%q) = %d; encoding/json writes %d bytes, Canonical %d", s, n, len(marshaled), len(canonical))
	}
	for _, limit := range []int{0, 2, 3, 7, n / 2, n - 1, n} {
		cut := TruncateJSON(s, limit)
		if !strings.HasPrefix(s, cut) {
			t.Fatalf("TruncateJSON(%q, %d) = %q: not a prefix", s, limit, cut)
		}
		if got := JSONLen(cut); got > max(limit, 2) {
			t.Fatalf("TruncateJSON(%q, %d) = %q, which takes %d", s, limit, cut, got)
		}
		if len(cut) < len(s) {
			if _, size := utf8.DecodeRuneInString(s[len(cut):]); JSONLen(s[:len(cut)+size]) <= limit {
				t.Fatalf("TruncateJSON(%q, %d) = %q: the next character fits too", s, limit, cut)
			}
		}
	}
}

// TestJSONLenBoundsBothEncodings: the worst characters (control
// characters, invalid bytes, the JavaScript line separators), HTML's and
// plain text; TruncateJSON never splits a character.
func TestJSONLenBoundsBothEncodings(t *testing.T) {
	tests := []struct {
		name string
		s    string
		want int // JSONLen, -1: not checked exactly
	}{
		{"empty", "", 2},
		{"plain", "hello", 7},
		{"quotes and backslashes", `a"b\c`, 9},
		{"newlines and tabs", "a\nb\tc\r", 11},
		{"control characters", "\x00\x01\x1f\b\f", 32},
		{"html (not escaped)", "<a href=x&y>", 14},
		{"invalid utf-8", "\xff\xfe", 14},
		{"line separators", "\u2028\u2029", 14},
		{"multi-byte", "héllo, 世界 🌍", -1},
		{"cut inside a sequence", "ab\xe4\xb8", 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := JSONLen(tt.s); tt.want >= 0 && got != tt.want {
				t.Errorf("JSONLen(%q) = %d, want %d", tt.s, got, tt.want)
			}
			checkJSONLen(t, tt.s)
		})
	}
	if got := TruncateJSON("世界", 5); got != "世" {
		t.Errorf("TruncateJSON(世界, 5) = %q, want 世 (never half a character)", got)
	}
}

// FuzzJSONLen: for any bytes, JSONLen bounds what the record encoders
// write, and TruncateJSON's prefix fits.
func FuzzJSONLen(f *testing.F) {
	for _, s := range []string{"", "x", "<>&", "\x00\n", "\xff", "\u2028", "é世🌍", "\"\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkJSONLen(t, s) })
}
