package action

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseActionsFile: any bytes either parse into registrations that
// validate and render without panicking, or are refused with an error
// that names the file and wraps ErrInvalid; never a panic, and never an
// error showing a secret's value.
func FuzzParseActionsFile(f *testing.F) {
	f.Add(readFixture(f, "tickets.yaml"))
	f.Add(readFixture(f, "tickets.json"))
	f.Add(readFixture(f, "misspelt.yaml"))
	f.Add([]byte(action("a.b", "A1", okParams, `{method: POST, url: "http://h/{{path .params.title}}", headers: {X: "{{secret \"K\"}}"}, body: "{{json .target}}"}`, `{K: {env: K}}`)))
	f.Add([]byte(`{"actions": {"a.b": {"class": "A0", "description": "d", "params": {"type": "object"}, "http": {"method": "GET", "url": "{{.target}}"}}}}`))
	f.Add([]byte("actions:\n  a.b: &x {class: A1}\n  c.d: *x\n"))
	f.Add([]byte(action("tickets.create_v2", "A2", okParams, `{method: POST, url: "http://h/x"}`, "")))
	f.Add([]byte(action("mcp.fs.read-text_file", "A0", okParams, `{method: GET, url: "http://h/x"}`, "")))
	src := fakeSecrets{env: map[string]string{"K": "fuzz-secret-value"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		regs, err := ParseFile("fuzz.yaml", data, ParseOptions{Secrets: src})
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "actions file fuzz.yaml: ") {
				t.Fatalf("error %v does not name the file or wrap ErrInvalid", err)
			}
			if strings.Contains(err.Error(), "fuzz-secret-value") {
				t.Fatalf("error shows the secret: %v", err)
			}
			return
		}
		for _, r := range regs {
			if err := r.Validate(); err != nil {
				t.Fatalf("parsed registration does not validate: %v", err)
			}
			if rd, err := r.Render("http://127.0.0.1/", map[string]string{"title": "t"}); err == nil && strings.Contains(rd.URL+rd.Body, "fuzz-secret-value") {
				t.Fatalf("a rendered URL or body holds the secret: %+v", rd)
			}
		}
	})
}

// FuzzRender: untrusted targets and params render, or are refused with
// ErrRender; never a panic, never a secret outside the headers, and a
// rendered URL is always an absolute http(s) URL and no header holds a
// line break.
func FuzzRender(f *testing.F) {
	data := action("a.b", "A2", `{type: object, properties: {title: {type: string, maxLength: 100}, body: {type: string}}}`,
		`{method: POST, url: "http://127.0.0.1:9000/{{path .target}}?t={{query .params.title}}", headers: {Authorization: "Bearer {{secret \"K\"}}", X-Title: "{{.params.title}}"}, body: "{\"title\": {{json .params.title}}, \"body\": {{.params.body | json}}}"}`,
		`{K: {env: K}}`)
	regs, err := ParseFile("f", []byte(data), ParseOptions{Secrets: fakeSecrets{env: map[string]string{"K": "render-secret-value"}}})
	if err != nil {
		f.Fatal(err)
	}
	r := regs[0]
	f.Add("team", "Disk full", "body")
	f.Add("../../etc", "a\r\nX-Evil: 1", "\x00")
	f.Add("", "<secret:K>", "{{secret \"K\"}}")
	f.Add("%zz", strings.Repeat("é", 101), `"}`)
	f.Fuzz(func(t *testing.T, target, title, body string) {
		params := map[string]string{"title": title, "body": body}
		shown, err := r.Render(target, params)
		if err != nil {
			if !errors.Is(err, ErrRender) {
				t.Fatalf("error %v is not ErrRender", err)
			}
			return
		}
		if !strings.HasPrefix(shown.URL, "http://127.0.0.1:9000/") {
			t.Fatalf("URL %q escaped its host", shown.URL)
		}
		sent, err := r.RenderRequest(target, params)
		if err != nil {
			t.Fatalf("Render passed, RenderRequest failed: %v", err)
		}
		if sent.URL != shown.URL || sent.Body != shown.Body {
			t.Fatalf("shown and sent differ outside the headers: %+v / %+v", shown, sent)
		}
		for _, s := range []string{shown.URL, shown.Body, shown.Header[0].Value, shown.Header[1].Value} {
			if strings.Contains(s, "render-secret-value") {
				t.Fatalf("the shown request holds the secret: %+v", shown)
			}
		}
		if sent.Header[0].Value != "Bearer render-secret-value" || sent.Header[1].Value != shown.Header[1].Value {
			t.Fatalf("sent headers %+v", sent.Header)
		}
		for _, h := range sent.Header {
			if strings.ContainsAny(h.Value, "\r\n\x00") {
				t.Fatalf("header %s holds a line break", h.Name)
			}
		}
	})
}
