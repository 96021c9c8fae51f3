package contract

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestCheckIntentText: a control, bidi or invisible character in the
// target, a parameter name or a parameter value other than a body is
// refused with CodeInvalid, the field's pointer and ReasonHiddenCharacter;
// right-to-left letters, accents and emoji in names, and anything in a
// body, are accepted.
func TestCheckIntentText(t *testing.T) {
	refused := []struct {
		name  string
		req   IntentRequest
		field string
	}{
		{"right-to-left override in the target", IntentRequest{Target: "invoice\u202Etxt.exe"}, "/target"},
		{"left-to-right embedding", IntentRequest{Target: "a\u202Ab"}, "/target"},
		{"pop directional formatting", IntentRequest{Target: "a\u202Cb"}, "/target"},
		{"right-to-left isolate", IntentRequest{Target: "a\u2067b"}, "/target"},
		{"first strong isolate", IntentRequest{Target: "a\u2068b"}, "/target"},
		{"pop directional isolate", IntentRequest{Target: "a\u2069b"}, "/target"},
		{"left-to-right mark", IntentRequest{Target: "a\u200Eb"}, "/target"},
		{"right-to-left mark", IntentRequest{Target: "a\u200Fb"}, "/target"},
		{"arabic letter mark", IntentRequest{Target: "a\u061Cb"}, "/target"},
		{"zero-width space", IntentRequest{Target: "re\u200Bport.txt"}, "/target"},
		{"zero-width non-joiner", IntentRequest{Target: "a\u200Cb"}, "/target"},
		{"zero-width joiner", IntentRequest{Target: "a\u200Db"}, "/target"},
		{"word joiner", IntentRequest{Target: "a\u2060b"}, "/target"},
		{"invisible times", IntentRequest{Target: "a\u2062b"}, "/target"},
		{"invisible plus", IntentRequest{Target: "a\u2064b"}, "/target"},
		{"byte order mark", IntentRequest{Target: "\uFEFFa.txt"}, "/target"},
		{"soft hyphen", IntentRequest{Target: "pass\u00ADwd"}, "/target"},
		{"mongolian vowel separator", IntentRequest{Target: "a\u180Eb"}, "/target"},
		{"hangul filler", IntentRequest{Target: "a\u3164b"}, "/target"},
		{"tag character", IntentRequest{Target: "a\U000E0041b"}, "/target"},
		{"variation selector", IntentRequest{Target: "a\uFE0Fb"}, "/target"},
		{"line separator", IntentRequest{Target: "a\u2028b"}, "/target"},
		{"tab", IntentRequest{Target: "a\tb"}, "/target"},
		{"newline", IntentRequest{Target: "a\nb"}, "/target"},
		{"carriage return", IntentRequest{Target: "https://h/\r\nX: y"}, "/target"},
		{"escape", IntentRequest{Target: "a\x1b[2Jb"}, "/target"},
		{"delete", IntentRequest{Target: "a\x7fb"}, "/target"},
		{"C1 next line", IntentRequest{Target: "a\u0085b"}, "/target"},
		{"C1 control sequence introducer", IntentRequest{Target: "a\u009bb"}, "/target"},
		{"invalid UTF-8", IntentRequest{Target: "a\xffb"}, "/target"},
		{"bidi in a parameter value", IntentRequest{Target: "https://h/", Params: map[string]string{"content_type": "text/plain\u202E"}}, "/params/content_type"},
		{"zero-width space in a parameter value", IntentRequest{Target: "a", Params: map[string]string{"mode": "x\u200By"}}, "/params/mode"},
		{"newline in a parameter value", IntentRequest{Target: "a", Params: map[string]string{"content_type": "a\r\nb"}}, "/params/content_type"},
		{"bidi in a parameter name", IntentRequest{Target: "a", Params: map[string]string{"con\u202Etent": "x"}}, "/params"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckIntentText(tt.req)
			var ce *Error
			if !errors.As(err, &ce) || ce.Code != CodeInvalid || len(ce.Reasons) != 1 || ce.Reasons[0] != ReasonHiddenCharacter {
				t.Fatalf("CheckIntentText = %#v, want %s with reason %s", err, CodeInvalid, ReasonHiddenCharacter)
			}
			if !strings.HasPrefix(ce.Message, `field "`+tt.field+`": `) {
				t.Fatalf("message %q does not name field %s", ce.Message, tt.field)
			}
			for _, r := range ce.Message {
				if Hidden(r) {
					t.Fatalf("message %q echoes the character", ce.Message)
				}
			}
			t.Log(ce.Message)
		})
	}
	accepted := []IntentRequest{
		{Target: "reports/2026/q1.txt"},
		{Target: "تقرير/ملف.txt"},            // right-to-left letters, no controls
		{Target: "דוח.txt"},                  // Hebrew
		{Target: "café/naïve/Ωmega/日本語.txt"}, // accents, Greek, CJK
		{Target: "a b.txt"},                  // a space
		{Target: "📄.txt"},
		{Target: "https://api.example.com/v1/x?a=1&b=%E2%80%AE"}, // a percent-encoded U+202E is text
		{Target: "a.txt", Params: map[string]string{"content": "line 1\n\tline 2\r\n\u202E\u200B\uFEFF\x1b[0m שלום"}},
		{Target: "https://h/", Params: map[string]string{"body": "{\"a\":\"\u2067x\u2069\"}\n", "content_type": "application/json; charset=utf-8"}},
	}
	for _, req := range accepted {
		if err := CheckIntentText(req); err != nil {
			t.Errorf("CheckIntentText(%+q) = %v, want accepted", req.Target, err)
		}
	}
}

// FuzzCheckIntentText: a target is refused exactly when it holds a Hidden
// rune or an invalid byte; a refusal never echoes what it refused; the
// same text is always accepted as a body.
func FuzzCheckIntentText(f *testing.F) {
	for _, s := range []string{"a.txt", "a\u202Eb", "\u200B", "a\tb", "\xff", "تقرير", "\u00AD", "\U000E0001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := !utf8.ValidString(s)
		for _, r := range s {
			want = want || Hidden(r)
		}
		err := CheckIntentText(IntentRequest{Target: s})
		if (err != nil) != want {
			t.Fatalf("CheckIntentText(%+q) = %v, want refused %v", s, err, want)
		}
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.Code != CodeInvalid || !utf8.ValidString(ce.Message) {
				t.Fatalf("refusal %#v", err)
			}
			for _, r := range ce.Message {
				if Hidden(r) {
					t.Fatalf("message %+q echoes a hidden character", ce.Message)
				}
			}
		}
		if err := CheckIntentText(IntentRequest{Target: "a", Params: map[string]string{"content": s, "body": s}}); err != nil {
			t.Fatalf("body %+q refused: %v", s, err)
		}
	})
}
