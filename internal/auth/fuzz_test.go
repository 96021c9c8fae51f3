package auth

import (
	"strings"
	"testing"
)

// FuzzParseKey: a presented key (an untrusted header value) either parses
// into a 16-hex-digit id and a secret that rebuild it exactly, or is
// refused; KeyID agrees with parseKey.
func FuzzParseKey(f *testing.F) {
	f.Add("exo_0123456789abcdef_" + strings.Repeat("A", 43))
	f.Add("exo_0123456789ABCDEF_" + strings.Repeat("A", 43))
	f.Add("exo__")
	f.Add("exo_0123456789abcdef_" + strings.Repeat("A", 42) + "\n")
	f.Fuzz(func(t *testing.T, key string) {
		id, secret, ok := parseKey(key)
		if !ok {
			if KeyID(key) != "" {
				t.Fatalf("KeyID(%q) = %q for a malformed key", key, KeyID(key))
			}
			return
		}
		if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("id %q of %q", id, key)
		}
		if len(secret) != 43 || strings.Trim(secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Fatalf("secret of %q is not 43 base64url characters", key)
		}
		if KeyPrefix+id+"_"+secret != key || KeyID(key) != "key_"+id {
			t.Fatalf("parse of %q does not rebuild it: %q %q", key, id, secret)
		}
	})
}
