package contract

import "unicode/utf8"

// JSONLen returns the most bytes s takes as a JSON string, quotes
// included, in either encoding ExoArmur stores records in: canonical JSON
// (Canonical: minimal escaping, invalid UTF-8 written as U+FFFD) or
// encoding/json's without HTML escaping (the gate's bucket values: it
// writes each invalid byte as \ufffd, and U+2028 and U+2029 escaped). A
// character costs 1 to 6 bytes: a control character or an invalid byte
// can take six times its size, so a limit on stored records is a limit on
// JSONLen, not on len. (encoding/json's HTML escaping, json.Marshal's
// default, would make each <, > and & six bytes too: values sized by
// JSONLen must not be stored with it.)
func JSONLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		cost, size := jsonCost(s, i)
		n += cost
		i += size
	}
	return n
}

// TruncateJSON returns the longest prefix of s, cut between characters
// (never inside a UTF-8 sequence), whose JSONLen is at most n.
func TruncateJSON(s string, n int) string {
	used := 2
	for i := 0; i < len(s); {
		cost, size := jsonCost(s, i)
		if used+cost > n {
			return s[:i]
		}
		used += cost
		i += size
	}
	return s
}

// jsonCost returns what the character at s[i] costs encoded (the larger of
// the two encodings) and its size in s.
func jsonCost(s string, i int) (cost, size int) {
	c := s[i]
	if c < utf8.RuneSelf {
		switch {
		case c == '"', c == '\\', c == '\n', c == '\r', c == '\t':
			return 2, 1
		case c < 0x20:
			return 6, 1 // \u00XX (\b and \f too: older encoders write them so)
		default:
			return 1, 1
		}
	}
	r, size := utf8.DecodeRuneInString(s[i:])
	switch {
	case r == utf8.RuneError && size == 1:
		return 6, 1 // \ufffd
	case r == '\u2028', r == '\u2029':
		return 6, size
	default:
		return size, size
	}
}
