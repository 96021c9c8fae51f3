package executor

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

type envSecrets map[string]string

func (e envSecrets) LookupEnv(n string) (string, bool) { v, ok := e[n]; return v, ok }
func (envSecrets) ReadFile(string) ([]byte, error)     { return nil, errors.New("no files") }

const ticketSecret = "tk-5ecret-bearer-value"

func ticketsFile(url string) []byte {
	return []byte(`actions:
  tickets.create:
    class: A2
    description: Create a ticket
    params:
      type: object
      required: [title]
      additionalProperties: false
      properties:
        title: {type: string, maxLength: 1000}
    http:
      method: PUT
      url: "` + url + `/tickets/{{path .target}}?src=agent"
      headers:
        Authorization: "Bearer {{secret \"TOKEN\"}}"
        Content-Type: application/json
      body: '{"title": {{json .params.title}}}'
    secrets:
      TOKEN: {env: TICKETS_TOKEN}
`)
}

// TestHTTPTemplate: a declared action sends its method, URL, headers and
// body to an allowlisted loopback server; the secret arrives there and
// only there: an echo of it in the response is redacted from the output,
// a redirect is not followed, status >= 400 is an error, and a host off
// the allowlist is refused.
func TestHTTPTemplate(t *testing.T) {
	type seen struct {
		method, uri, auth, ctype, body string
	}
	got := make(chan seen, 4)
	var otherHits int
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { otherHits++ }))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)}
		switch r.URL.Path {
		case "/tickets/redirect":
			http.Redirect(w, r, other.URL+"/stolen", http.StatusFound)
		case "/tickets/fail":
			http.Error(w, "no", http.StatusConflict)
		default:
			w.Header().Set("X-Echo", r.Header.Get("Authorization"))
			io.WriteString(w, `{"id": 7, "echo": "`+r.Header.Get("Authorization")+`"}`)
		}
	}))
	defer srv.Close()
	regs, err := action.ParseFile("actions.yaml", ticketsFile(srv.URL), action.ParseOptions{Secrets: envSecrets{"TICKETS_TOKEN": ticketSecret}})
	if err != nil {
		t.Fatal(err)
	}
	actions := must(action.New(append(action.Builtin().List(), regs...)...))
	reg, err := New(Config{Actions: actions, SandboxDir: t.TempDir(), HTTPTimeout: 5 * time.Second,
		Allowlist: []string{strings.TrimPrefix(srv.URL, "http://")}})
	if err != nil {
		t.Fatal(err)
	}
	ex, ok := reg.Lookup("tickets.create")
	if !ok {
		t.Fatal("no executor for tickets.create")
	}
	for _, p := range []*gate.Permit{nil, {}} {
		if _, err := ex.Run(t.Context(), p); !errors.Is(err, ErrNoPermit) {
			t.Fatalf("Run without a permit = %v", err)
		}
	}
	e := ex.(httpTemplate)
	intent := func(target, title string) contract.ActionIntent {
		return contract.ActionIntent{Action: "tickets.create", Target: target, Params: map[string]string{"title": title}}
	}

	out, err := e.send(t.Context(), intent("ops team", `Disk "full"`))
	if err != nil {
		t.Fatal(err)
	}
	s := <-got
	want := seen{"PUT", "/tickets/ops%20team?src=agent", "Bearer " + ticketSecret, "application/json", `{"title": "Disk \"full\""}`}
	if s != want {
		t.Fatalf("server saw %+v, want %+v", s, want)
	}
	if out["status"] != "200" || out["body"] != `{"id": 7, "echo": "Bearer <secret:TOKEN>"}` {
		t.Fatalf("output %v: the echo of the secret must be redacted", out)
	}
	for k, v := range out {
		if strings.Contains(k+v, ticketSecret) {
			t.Fatalf("output holds the secret: %v", out)
		}
	}

	if out, err := e.send(t.Context(), intent("redirect", "t")); err != nil || out["status"] != "302" || otherHits != 0 {
		t.Fatalf("redirect: %v, %v, other hit %d times: a redirect must not be followed", out, err, otherHits)
	}
	<-got
	if _, err := e.send(t.Context(), intent("fail", "t")); err == nil || !strings.Contains(err.Error(), "http status 409") || strings.Contains(err.Error(), ticketSecret) {
		t.Fatalf("status 409: %v", err)
	}
	<-got
	if _, err := e.send(t.Context(), intent("x", strings.Repeat("t", 1001))); !errors.Is(err, action.ErrRender) {
		t.Fatalf("params over the schema: %v", err)
	}

	// The same action pointing at a host off the allowlist is refused
	// before any request.
	regs2 := must(action.ParseFile("actions.yaml", ticketsFile(other.URL), action.ParseOptions{Secrets: envSecrets{"TICKETS_TOKEN": ticketSecret}}))
	reg2 := must(New(Config{Actions: must(action.New(regs2...)), SandboxDir: t.TempDir(), Allowlist: []string{strings.TrimPrefix(srv.URL, "http://")}}))
	ex2, _ := reg2.Lookup("tickets.create")
	if _, err := ex2.(httpTemplate).send(t.Context(), intent("x", "t")); !errors.Is(err, ErrHostNotAllowed) || otherHits != 0 {
		t.Fatalf("host off the allowlist: %v (hits %d)", err, otherHits)
	}

	// Unloaded secrets refuse startup, naming the secret.
	unloaded := must(action.ParseFile("actions.yaml", ticketsFile(srv.URL), action.ParseOptions{}))
	if _, err := New(Config{Actions: must(action.New(unloaded...)), SandboxDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "secret TOKEN is not loaded") {
		t.Fatalf("New with an unloaded secret = %v", err)
	}
}

// TestRedactCutSecret: a body cut by the bounded read inside a secret
// keeps no prefix of it.
func TestRedactCutSecret(t *testing.T) {
	b := action.DropSecretPrefix([]byte("abc tk-5ecr"), []string{ticketSecret})
	if string(b) != "abc " {
		t.Fatalf("got %q", b)
	}
}

// TestRedactEncodedEchoes: a service that echoes a secret encoded (JSON,
// URL, base64) has every form redacted, not only the one sent.
func TestRedactEncodedEchoes(t *testing.T) {
	const secret = `p&ss/w+rd="x"<y>`
	redact, forms := action.Redactor(map[string]string{"T": secret})
	quoted, _ := json.Marshal(secret)
	for _, echo := range []string{secret, string(quoted), `p&ss/w+rd=\"x\"<y>`, url.QueryEscape(secret), url.PathEscape(secret),
		base64.StdEncoding.EncodeToString([]byte(secret)), base64.RawURLEncoding.EncodeToString([]byte(secret))} {
		got := redact.Replace("seen: " + echo + ".")
		if !strings.Contains(got, "<secret:T>") {
			t.Errorf("echo %q left as %q", echo, got)
		}
		for _, f := range forms {
			if strings.Contains(got, f) {
				t.Errorf("echo %q: %q still holds the form %q", echo, got, f)
			}
		}
	}
}
