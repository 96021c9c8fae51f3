package action

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// Redactor replaces every echo of a secret's value by its placeholder:
// the value as sent, and as a service would echo it encoded (JSON-escaped,
// with and without HTML escaping; query- and path-escaped; base64). It
// returns the replacer and every form it removes, longest first. The
// executors redact outputs with it; the MCP supervisor redacts what an
// upstream says about itself (errors, standard error).
func Redactor(secrets map[string]string) (*strings.Replacer, []string) {
	type form struct{ text, placeholder string }
	var forms []form
	seen := map[string]bool{}
	for _, n := range slices.Sorted(maps.Keys(secrets)) {
		v := secrets[n]
		quoted, _ := json.Marshal(v) // a string always encodes
		var plain strings.Builder
		enc := json.NewEncoder(&plain)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v)
		unescaped := strings.TrimSuffix(plain.String(), "\n")
		for _, f := range []string{v, string(quoted[1 : len(quoted)-1]), unescaped[1 : len(unescaped)-1],
			url.QueryEscape(v), url.PathEscape(v), base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v))} {
			if f != "" && !seen[f] {
				seen[f] = true
				forms = append(forms, form{f, SecretPlaceholder(n)})
			}
		}
	}
	// Longest first: a form holding another is replaced whole.
	slices.SortStableFunc(forms, func(a, b form) int { return len(b.text) - len(a.text) })
	pairs := make([]string, 0, 2*len(forms))
	values := make([]string, 0, len(forms))
	for _, f := range forms {
		pairs = append(pairs, f.text, f.placeholder)
		values = append(values, f.text)
	}
	return strings.NewReplacer(pairs...), values
}

// DropSecretPrefix drops from the end of b a prefix of any secret (the
// rest of which the bounded read left unread).
func DropSecretPrefix(b []byte, secrets []string) []byte {
	for _, s := range secrets {
		for n := min(len(s)-1, len(b)); n > 0; n-- {
			if strings.HasSuffix(string(b), s[:n]) {
				b = b[:len(b)-n]
				break
			}
		}
	}
	return b
}
