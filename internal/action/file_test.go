package action

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// fakeSecrets is an injected SecretSource.
type fakeSecrets struct {
	env   map[string]string
	files map[string]string
}

func (f fakeSecrets) LookupEnv(name string) (string, bool) { v, ok := f.env[name]; return v, ok }
func (f fakeSecrets) ReadFile(path string) ([]byte, error) {
	v, ok := f.files[path]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	return []byte(v), nil
}

const testToken = "s3cr3t-token-value"

var testSecrets = fakeSecrets{
	env:   map[string]string{"TICKETS_TOKEN": testToken},
	files: map[string]string{"/run/secrets/tickets": "file-secret-value\n"},
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseFileFixtures: the YAML and the JSON form of tickets.create
// parse to the same registration, which renders its request with the
// secret as a placeholder and, for the executor only, with its value.
func TestParseFileFixtures(t *testing.T) {
	for _, name := range []string{"tickets.yaml", "tickets.json"} {
		t.Run(name, func(t *testing.T) {
			regs, err := ParseFile(name, readFixture(t, name), ParseOptions{Secrets: testSecrets})
			if err != nil {
				t.Fatal(err)
			}
			r := regs[0]
			if r.Type != "tickets.create" || r.Class != contract.A2 || r.ReadOnly || r.Effect.Name() != policy.HTTP.Name() ||
				r.Executor.Kind != HTTPTemplate || r.Executor.Method != "POST" {
				t.Fatalf("registration = %+v", r)
			}
			if !r.Effect.HasParams() || fmt.Sprint(r.PolicyType().Params) != "[{body false} {title true}]" {
				t.Errorf("policy type %+v: the policies must see the params", r.PolicyType())
			}
			if got := r.Executor.Template.Properties(); strings.Join(got, ",") != "body,title" {
				t.Errorf("properties = %v", got)
			}
			params := map[string]string{"title": `Disk "full" <on> db-1`}
			rd, err := r.Render("ops team", params)
			if err != nil {
				t.Fatal(err)
			}
			want := Rendered{Method: "POST", URL: "http://127.0.0.1:9000/tickets?team=ops+team",
				Header: []Header{{"Authorization", "Bearer <secret:TICKETS_TOKEN>"}, {"Content-Type", "application/json"}},
				Body:   `{"title": "Disk \"full\" <on> db-1"}`}
			if fmt.Sprint(rd) != fmt.Sprint(want) {
				t.Errorf("Render =\n %+v, want\n %+v", rd, want)
			}
			sent, err := r.RenderRequest("ops team", params)
			if err != nil {
				t.Fatal(err)
			}
			if sent.Header[0].Value != "Bearer "+testToken || sent.URL != want.URL || sent.Body != want.Body {
				t.Errorf("RenderRequest = %+v", sent)
			}
			if target, err := r.PolicyTarget("ops team", params); err != nil || target != want.URL {
				t.Errorf("PolicyTarget = %q, %v; want the rendered URL", target, err)
			}
			// The registration with its loaded secret prints no secret.
			for _, s := range []string{fmt.Sprintf("%v", r), fmt.Sprintf("%+v", r), fmt.Sprintf("%#v", r), fmt.Sprint(r.Executor.Template.Secret("TICKETS_TOKEN"))} {
				if strings.Contains(s, testToken) {
					t.Fatalf("a formatted registration holds the secret: %s", s)
				}
			}
			if _, err := New(append(Builtin().List(), regs...)...); err != nil {
				t.Fatalf("builtins + declared: %v", err)
			}
		})
	}
}

// TestParseFileUnloaded: without a SecretSource the secrets are named,
// not loaded: Render works (placeholders), RenderRequest refuses.
func TestParseFileUnloaded(t *testing.T) {
	regs, err := ParseFile("tickets.yaml", readFixture(t, "tickets.yaml"), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := regs[0]
	if _, err := r.Render("x", map[string]string{"title": "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RenderRequest("x", map[string]string{"title": "t"}); !errors.Is(err, ErrRender) || !strings.Contains(err.Error(), `"TICKETS_TOKEN" is not loaded`) {
		t.Fatalf("RenderRequest unloaded = %v", err)
	}
	if got := regs[1].Executor.Template.SecretNames(); len(got) != 1 || got[0] != "KEY" || !regs[1].ReadOnly {
		t.Errorf("tickets.read = %+v", regs[1])
	}
}

// action is a one-action file around an http block and params.
func action(name, class, params, httpBlock, secrets string) string {
	s := "actions:\n  " + name + ":\n    class: " + class + "\n    description: d\n"
	if params != "" {
		s += "    params: " + params + "\n"
	}
	if httpBlock != "" {
		s += "    http: " + httpBlock + "\n"
	}
	if secrets != "" {
		s += "    secrets: " + secrets + "\n"
	}
	return s
}

const okParams = `{type: object, properties: {title: {type: string}}}`

// TestParseFileRefusals: every refusal, with the file, the action, the
// field and why.
func TestParseFileRefusals(t *testing.T) {
	post := func(extra string) string { return `{method: POST, url: "http://127.0.0.1/x"` + extra + `}` }
	cases := []struct {
		name, data, want string
	}{
		{"misspelt field", string(readFixture(t, "misspelt.yaml")), `unknown field "hedaers"`},
		{"not yaml", "actions: [", "not valid YAML or JSON"},
		{"duplicate key", "actions:\n  a.b: {}\n  a.b: {}\n", "not valid YAML or JSON"},
		{"no actions", "actions: {}\n", "at least one action"},
		{"name pattern", action("tickets_create", "A2", okParams, post(""), ""), `action "tickets_create": invalid action registration: name: must be two or more dot-separated segments of lower-case letters, digits, _ and -, each starting with a letter or digit (^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$, 3..128 bytes): an action name has at least two segments`},
		{"name upper case", action("Tickets.create", "A2", okParams, post(""), ""), `action "Tickets.create": invalid action registration: name: must be`},
		{"name leading dot", action(`".tickets.create"`, "A2", okParams, post(""), ""), `no empty segment`},
		{"name double dot", action("tickets..create", "A2", okParams, post(""), ""), `no empty segment`},
		{"name trailing dot", action(`"tickets.create."`, "A2", okParams, post(""), ""), `no empty segment`},
		{"name segment starting with _", action("tickets._create", "A2", okParams, post(""), ""), `starts with a lower-case letter or digit`},
		{"name 129 bytes", action("t."+strings.Repeat("c", 127), "A2", okParams, post(""), ""), `at most 128 bytes`},
		{"name non-ASCII", action("tickets.créer", "A2", okParams, post(""), ""), `only lower-case letters, digits`},
		{"name with slash", action("tickets/create.x", "A2", okParams, post(""), ""), `only lower-case letters, digits`},
		{"builtin", action("http.post", "A2", okParams, post(""), ""), `name: http.post is a built-in action type`},
		{"class", action("a.b", "A9", okParams, post(""), ""), `class: "A9" is not one of A0, A1, A2, A3`},
		{"no description", "actions:\n  a.b:\n    class: A1\n    params: " + okParams + "\n    http: " + post("") + "\n", "description: required"},
		{"no http", action("a.b", "A1", okParams, "", ""), "http: required"},
		{"method", action("a.b", "A1", okParams, `{method: TRACE, url: "http://h/"}`, ""), `http.method: "TRACE" is not one of GET, POST, PUT, PATCH, DELETE`},
		{"A0 post", action("a.b", "A0", okParams, post(""), ""), `http.method: class A0 (observe) needs a read-only method (GET), not POST`},
		{"get body", action("a.b", "A0", okParams, `{method: GET, url: "http://h/", body: "x"}`, ""), `http.body: a GET sends no body`},
		{"no url", action("a.b", "A1", okParams, `{method: POST}`, ""), `http.url: required`},
		{"no params", action("a.b", "A1", "", post(""), ""), `params: required`},
		{"params not object", action("a.b", "A1", `{type: string}`, post(""), ""), `params: must be a schema of type "object"`},
		{"params int property", action("a.b", "A1", `{type: object, properties: {count: {type: integer}}}`, post(""), ""), `params: properties.count: type must be "string"`},
		{"params bad name", action("a.b", "A1", `{type: object, properties: {Title: {type: string}}}`, post(""), ""), `params: properties.Title: a param name`},
		{"params invalid schema", action("a.b", "A1", `{type: object, properties: {t: {type: string, maxLength: -1}}}`, post(""), ""), `params: not a valid JSON Schema`},
		{"params remote ref", action("a.b", "A1", `{type: object, properties: {t: {$ref: "file:///etc/passwd"}}}`, post(""), ""), `may not reference another document`},
		{"undeclared param", action("a.b", "A1", okParams, post(`, body: "{{.params.nope}}"`), ""), `http.body: .params.nope: param "nope" is not declared in the params schema's properties`},
		{"secret in url", action("a.b", "A1", okParams, `{method: POST, url: "http://h/?k={{secret \"K\"}}"}`, `{K: {env: K}}`), `http.url: secret is allowed only in headers`},
		{"secret in body", action("a.b", "A1", okParams, post(`, body: "{{secret \"K\"}}"`), `{K: {env: K}}`), `http.body: secret is allowed only in headers`},
		{"undeclared secret", action("a.b", "A1", okParams, post(`, headers: {X: "{{secret \"K\"}}"}`), ""), `http.headers.X: secret "K" is not declared`},
		{"unused secret", action("a.b", "A1", okParams, post(""), `{K: {env: K}}`), `secrets.K: declared but no header uses it`},
		{"secret both", action("a.b", "A1", okParams, post(`, headers: {X: "{{secret \"K\"}}"}`), `{K: {env: K, file: /f}}`), `secrets.K: give exactly one of env or file`},
		{"secret name", action("a.b", "A1", okParams, post(""), `{"9K": {env: K}}`), `secrets.9K: a secret's name`},
		{"missing env", action("a.b", "A1", okParams, post(`, headers: {X: "{{secret \"K\"}}"}`), `{K: {env: NOT_SET}}`), `secrets.K: environment variable NOT_SET is not set`},
		{"missing file", action("a.b", "A1", okParams, post(`, headers: {X: "{{secret \"K\"}}"}`), `{K: {file: /nope}}`), `secrets.K: file /nope: file does not exist`},
		{"short secret", action("a.b", "A1", okParams, post(`, headers: {X: "{{secret \"K\"}}"}`), `{K: {env: SHORT}}`), `secrets.K: environment variable SHORT: the value is shorter than 8 bytes`},
		{"secret newline", action("a.b", "A1", okParams, post(`, headers: {X: "{{secret \"K\"}}"}`), `{K: {env: NL}}`), `the value holds a control character`},
		{"function", action("a.b", "A1", okParams, post(`, body: "{{printf \"%s\" .params.title}}"`), ""), `function printf is not allowed`},
		{"if", action("a.b", "A1", okParams, post(`, body: "{{if .target}}x{{end}}"`), ""), `a template may use only`},
		{"variable", action("a.b", "A1", okParams, post(`, body: "{{$x := .target}}"`), ""), `no variables`},
		{"dot", action("a.b", "A1", okParams, post(`, body: "{{.}}"`), ""), `a template may use only`},
		{"define", action("a.b", "A1", okParams, post(`, body: "{{define \"x\"}}y{{end}}"`), ""), `no define or block`},
		{"bad template", action("a.b", "A1", okParams, post(`, body: "{{.target"`), ""), `http.body: template: body:1: unclosed action`},
		{"header name", action("a.b", "A1", okParams, post(`, headers: {"X Y": v}`), ""), `http.headers.X Y: not a valid header name`},
		{"host header", action("a.b", "A1", okParams, post(`, headers: {host: v}`), ""), `http.headers.host: Host is set by the HTTP client`},
		{"header twice", action("a.b", "A1", okParams, post(`, headers: {x-a: v, X-A: w}`), ""), `declared twice`},
		{"too large", "actions: {}\n" + strings.Repeat("#", MaxFileBytes), "larger than"},
	}
	src := fakeSecrets{env: map[string]string{"K": "long-enough-secret", "SHORT": "tiny", "NL": "long-enough\nsecret"}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseFile("my-actions.yaml", []byte(c.data), ParseOptions{Secrets: src})
			if err == nil {
				t.Fatalf("parsed:\n%s", c.data)
			}
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "actions file my-actions.yaml: ") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want one naming the file and holding %q", err, c.want)
			}
			for _, v := range src.env {
				if strings.Contains(err.Error(), v) {
					t.Fatalf("the error shows a secret value: %v", err)
				}
			}
		})
	}
}

// TestRenderRefusals: params that fail the schema, a URL that is not
// absolute http(s) and a header value with a line break do not render.
func TestRenderRefusals(t *testing.T) {
	data := action("a.b", "A1", `{type: object, required: [title], additionalProperties: false, properties: {title: {type: string, maxLength: 10}, host: {type: string}}}`,
		`{method: POST, url: "{{.target}}", headers: {X-Title: "{{.params.title}}"}}`, "")
	regs, err := ParseFile("f", []byte(data), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := regs[0]
	cases := []struct {
		target string
		params map[string]string
		want   string
	}{
		{"http://h/", nil, `field "/params": missing property 'title'`},
		{"http://h/", map[string]string{"title": strings.Repeat("x", 11)}, `field "/params/title": maxLength: got 11, want 10`},
		{"http://h/", map[string]string{"title": "t", "other": "x"}, `additional properties 'other' not allowed`},
		{"ftp://h/", map[string]string{"title": "t"}, `"ftp://h/" is not an absolute http(s) URL`},
		{"http://u:p@h/", map[string]string{"title": "t"}, `is not an absolute http(s) URL without credentials`},
		{"http://h/", map[string]string{"title": "a\r\nB: c"}, `header X-Title: the value holds a line break`},
	}
	for _, c := range cases {
		_, err := r.Render(c.target, c.params)
		if !errors.Is(err, ErrRender) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Render(%q, %v) = %v, want %q", c.target, c.params, err, c.want)
		}
	}
	if err := r.CheckParams(map[string]string{}); contract.ErrorCode(err) != contract.CodeInvalid {
		t.Errorf("CheckParams code = %v", err)
	}
	if _, err := Builtin().List()[0].Render("x", nil); !errors.Is(err, ErrRender) {
		t.Errorf("a built-in renders: %v", err)
	}
}

// TestLoadFile: "" is the built-ins; a file adds its actions after them.
func TestLoadFile(t *testing.T) {
	if r, err := LoadFile("", ParseOptions{}); err != nil || r != Builtin() {
		t.Fatalf("LoadFile(\"\") = %v, %v", r, err)
	}
	r, err := LoadFile("testdata/tickets.yaml", ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(r.List()); n != len(Builtin().List())+2 {
		t.Fatalf("registry has %d types", n)
	}
	if r.ClassOf("tickets.create") != contract.A2 || r.ClassOf("fs.read") != contract.A0 {
		t.Error("registry classes wrong")
	}
	if _, err := LoadFile("testdata/none.yaml", ParseOptions{}); err == nil || !strings.Contains(err.Error(), "none.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestParseFileWideNames: declared actions may have v2 names (digits, _
// and -, more than two segments, up to 128 bytes), each registered under
// its name.
func TestParseFileWideNames(t *testing.T) {
	post := `{method: POST, url: "http://127.0.0.1/x"}`
	names := []string{"tickets.create_v2", "chat.post-message", "crm.contacts.v2.update", "s3.put", "t." + strings.Repeat("c", 126)}
	var data strings.Builder
	data.WriteString("actions:\n")
	for _, n := range names {
		data.WriteString(strings.TrimPrefix(action(n, "A2", okParams, post, ""), "actions:\n"))
	}
	regs, err := ParseFile("wide.yaml", []byte(data.String()), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range regs {
		got[r.Type] = true
	}
	for _, n := range names {
		if !got[n] {
			t.Errorf("%s not registered (%v)", n, got)
		}
	}
}
