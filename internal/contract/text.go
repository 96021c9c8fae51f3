package contract

import (
	"fmt"
	"slices"
	"sort"
	"unicode"
	"unicode/utf8"
)

// ReasonHiddenCharacter is the reason of a proposal refused because its
// target, a parameter name or a parameter value holds a control, bidi or
// invisible character (CheckIntentText).
const ReasonHiddenCharacter = "hidden_character"

// BodyParams are the parameters that carry a body of text rather than a
// name, path or URL (the content fs.write writes, the body an http.post
// sends): their values may hold any character the JSON layer admits (all
// but NUL), newlines, tabs and right-to-left text included. Every other
// parameter, the target and every parameter name are names an operator
// reads, and CheckIntentText refuses hidden characters in them.
var BodyParams = []string{"body", "content"}

// CheckIntentText refuses a proposal whose target, parameter names or
// parameter values (except BodyParams) hold a character that makes what an
// operator reads differ from what runs (Hidden): a C0 or C1 control, a bidi
// control such as U+202E, which shows "txt.exe" as "exe.txt", or an
// invisible character. The idempotency key is restricted further by its
// schema (tenant.ValidIdempotencyKey). The error is CodeInvalid with the
// field's JSON pointer and ReasonHiddenCharacter; the character is named by
// its code point, never echoed.
func CheckIntentText(req IntentRequest) error {
	if err := checkText("/target", req.Target); err != nil {
		return err
	}
	keys := make([]string, 0, len(req.Params))
	for k := range req.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first field in a stable order
	for _, k := range keys {
		if err := checkText("/params", k); err != nil {
			return err
		}
		if slices.Contains(BodyParams, k) {
			continue
		}
		if err := checkText("/params/"+k, req.Params[k]); err != nil {
			return err
		}
	}
	return nil
}

func checkText(field, s string) error {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return hidden(field, i, "an invalid UTF-8 byte")
			}
		}
		if Hidden(r) {
			return hidden(field, i, fmt.Sprintf("%U (%s)", r, hiddenKind(r)))
		}
	}
	return nil
}

func hidden(field string, at int, what string) error {
	return &Error{Code: CodeInvalid, Reasons: []string{ReasonHiddenCharacter},
		Message: fmt.Sprintf("field %q: %s at byte %d: control, bidi and invisible characters are refused", field, what, at)}
}

// invisible are characters outside the control and format categories
// that render as nothing.
var invisible = []rune{
	0x034F,                 // combining grapheme joiner
	0x115F, 0x1160, 0x3164, // Hangul fillers
	0xFFA0, // halfwidth Hangul filler
	0x180E, // Mongolian vowel separator (a format character before Unicode 6.3)
	0x2800, // braille pattern blank
}

// Hidden reports whether r is refused in a name: a control character (C0,
// DEL, C1: category Cc), a format character (category Cf: the bidi
// controls U+061C, U+200E, U+200F, U+202A-U+202E and U+2066-U+2069, the
// zero-width U+200B-U+200D, U+2060-U+2064, U+FEFF, the soft hyphen U+00AD,
// the tag characters), a line or paragraph separator (U+2028, U+2029), a
// variation selector, or another character that renders as nothing
// (invisible).
func Hidden(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Variation_Selector) ||
		slices.Contains(invisible, r)
}

func hiddenKind(r rune) string {
	switch {
	case unicode.Is(unicode.Cc, r):
		return "a control character"
	case unicode.Is(unicode.Bidi_Control, r):
		return "a bidi control"
	default:
		return "an invisible character"
	}
}
