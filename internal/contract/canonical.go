package contract

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Canonical returns the canonical JSON of v in the style of RFC 8785 (JCS):
// object keys sorted, no insignificant whitespace, strings with minimal
// escaping. V1 wire types carry only strings, booleans, integers, arrays and
// objects; a non-integer number is refused rather than formatted in a way
// another implementation might not reproduce.
func Canonical(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("canonical: marshal: %w", err)
	}
	return CanonicalizeJSON(raw)
}

// CanonicalizeJSON rewrites a JSON document in canonical form. It is a
// single pass over the bytes (no intermediate tree): values are written as
// they are read, and only an object whose members arrive out of order is
// rearranged. Duplicate object keys and trailing data are refused.
func CanonicalizeJSON(raw []byte) ([]byte, error) {
	c := canonicalizer{in: raw, out: make([]byte, 0, len(raw))}
	if err := c.document(); err != nil {
		return nil, err
	}
	return c.out, nil
}

// maxDepth bounds nesting as encoding/json does.
const maxDepth = 10000

// canonicalizer reads in and appends the canonical form to out.
type canonicalizer struct {
	in      []byte
	pos     int
	out     []byte
	members []member // stack of the members of the objects being read
	scratch []byte
}

// member is one object member written to out[start:end] ("key":value);
// key is its decoded name.
type member struct {
	key        []byte
	start, end int
}

func (c *canonicalizer) document() error {
	c.space()
	if err := c.value(0); err != nil {
		return err
	}
	c.space()
	if c.pos != len(c.in) {
		return fmt.Errorf("canonical: trailing data after JSON value at offset %d", c.pos)
	}
	return nil
}

func (c *canonicalizer) errorf(format string, args ...any) error {
	return fmt.Errorf("canonical: offset %d: "+format, append([]any{c.pos}, args...)...)
}

func (c *canonicalizer) space() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicalizer) literal(word string) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(word)) {
		return c.errorf("invalid literal")
	}
	c.pos += len(word)
	c.out = append(c.out, word...)
	return nil
}

func (c *canonicalizer) value(depth int) error {
	if c.pos >= len(c.in) {
		return c.errorf("unexpected end of JSON input")
	}
	switch ch := c.in[c.pos]; {
	case ch == '{':
		return c.object(depth + 1)
	case ch == '[':
		return c.array(depth + 1)
	case ch == '"':
		_, err := c.str()
		return err
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	case ch == '-' || ('0' <= ch && ch <= '9'):
		return c.number()
	default:
		return c.errorf("invalid character %q looking for a value", ch)
	}
}

func (c *canonicalizer) array(depth int) error {
	if depth > maxDepth {
		return c.errorf("nesting deeper than %d", maxDepth)
	}
	c.pos++
	c.out = append(c.out, '[')
	c.space()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		return nil
	}
	for {
		c.space()
		if err := c.value(depth); err != nil {
			return err
		}
		c.space()
		if c.pos >= len(c.in) {
			return c.errorf("unexpected end of JSON input in array")
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			return nil
		default:
			return c.errorf("invalid character %q after array element", c.in[c.pos])
		}
	}
}

func (c *canonicalizer) object(depth int) error {
	if depth > maxDepth {
		return c.errorf("nesting deeper than %d", maxDepth)
	}
	c.pos++
	c.out = append(c.out, '{')
	body := len(c.out)
	base := len(c.members)
	defer func() { c.members = c.members[:base] }()
	c.space()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		return nil
	}
	for {
		c.space()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return c.errorf("object key must be a string")
		}
		start := len(c.out)
		key, err := c.str()
		if err != nil {
			return err
		}
		c.space()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return c.errorf("expected ':' after object key")
		}
		c.pos++
		c.out = append(c.out, ':')
		c.space()
		if err := c.value(depth); err != nil {
			return err
		}
		c.members = append(c.members, member{key: key, start: start, end: len(c.out)})
		c.space()
		if c.pos >= len(c.in) {
			return c.errorf("unexpected end of JSON input in object")
		}
		if c.in[c.pos] == '}' {
			c.pos++
			break
		}
		if c.in[c.pos] != ',' {
			return c.errorf("invalid character %q after object member", c.in[c.pos])
		}
		c.pos++
		c.out = append(c.out, ',')
	}
	ms := c.members[base:]
	sorted := true
	for i := 1; i < len(ms); i++ {
		switch bytes.Compare(ms[i-1].key, ms[i].key) {
		case 0:
			return c.errorf("duplicate object key %q", ms[i].key)
		case 1:
			sorted = false
		}
	}
	if !sorted {
		// JCS orders keys by UTF-16 code units; for the ASCII keys V1 permits
		// (schemas restrict property names) this equals byte order.
		slices.SortFunc(ms, func(a, b member) int { return bytes.Compare(a.key, b.key) })
		for i := 1; i < len(ms); i++ {
			if bytes.Equal(ms[i-1].key, ms[i].key) {
				return c.errorf("duplicate object key %q", ms[i].key)
			}
		}
		c.scratch = append(c.scratch[:0], c.out[body:]...)
		c.out = c.out[:body]
		for i, m := range ms {
			if i > 0 {
				c.out = append(c.out, ',')
			}
			c.out = append(c.out, c.scratch[m.start-body:m.end-body]...)
		}
	}
	c.out = append(c.out, '}')
	return nil
}

// str reads a string, writes its canonical form and returns its decoded
// value. A string without escapes in valid UTF-8 is copied as it is (its
// canonical form is itself); any other goes through encoding/json's
// decoder and appendString.
func (c *canonicalizer) str() ([]byte, error) {
	start := c.pos
	i := c.pos + 1
	plain, ascii := true, true
	for {
		if i >= len(c.in) {
			return nil, c.errorf("unterminated string")
		}
		ch := c.in[i]
		if ch == '"' {
			break
		}
		switch {
		case ch == '\\':
			plain = false
			i++ // the escaped byte; \u's digits are checked by the decoder
		case ch < 0x20:
			return nil, c.errorf("control character in string")
		case ch >= utf8.RuneSelf:
			ascii = false
		}
		i++
	}
	raw := c.in[start+1 : i]
	c.pos = i + 1
	if plain && (ascii || utf8.Valid(raw)) {
		c.out = append(c.out, '"')
		c.out = append(c.out, raw...)
		c.out = append(c.out, '"')
		return raw, nil
	}
	var s string
	if err := json.Unmarshal(c.in[start:c.pos], &s); err != nil {
		return nil, fmt.Errorf("canonical: offset %d: string: %w", start, err)
	}
	c.out = appendString(c.out, s)
	return []byte(s), nil
}

// number reads an integer; fractions and exponents are refused, "-0" is
// written as 0, and values outside int64 and uint64 are refused.
func (c *canonicalizer) number() error {
	start := c.pos
	if c.in[c.pos] == '-' {
		c.pos++
	}
	digits := c.pos
	for c.pos < len(c.in) && '0' <= c.in[c.pos] && c.in[c.pos] <= '9' {
		c.pos++
	}
	lit := c.in[start:c.pos]
	switch n := c.pos - digits; {
	case n == 0:
		return c.errorf("invalid number")
	case n > 1 && c.in[digits] == '0':
		return c.errorf("invalid number %q: leading zero", lit)
	}
	if c.pos < len(c.in) {
		switch c.in[c.pos] {
		case '.', 'e', 'E':
			return c.errorf("only integers are allowed, got a fraction or exponent after %s", lit)
		}
	}
	if string(lit) == "-0" {
		c.out = append(c.out, '0')
		return nil
	}
	if len(lit) > 18 {
		if _, err := strconv.ParseInt(string(lit), 10, 64); err != nil {
			if _, uerr := strconv.ParseUint(string(lit), 10, 64); uerr != nil {
				return c.errorf("only 64-bit integers are allowed, got %s", lit)
			}
		}
	}
	c.out = append(c.out, lit...)
	return nil
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string with JCS escaping: only '"', '\\'
// and control characters are escaped; everything else is literal UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\uFFFD"...) // as encoding/json decodes invalid UTF-8
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// Hash returns the lowercase hex SHA-256 of b.
func Hash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// HashOf returns the SHA-256 of the canonical JSON of v.
func HashOf(v any) (string, error) {
	c, err := Canonical(v)
	if err != nil {
		return "", err
	}
	return Hash(c), nil
}
