package api_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/api"
)

// TestHostileInputCatalogue walks the hostile-input catalogue of the
// reliability issue through the real API handler. Every item gets a 4xx
// with a machine-readable code, and none leaves state behind: the tenant's
// buckets (every key and revision) and its audit chain are byte-identical
// before and after, and no executor ran. Items that live below the API (the
// sandbox's symlink races, redirects and private addresses) are in
// internal/executor's TestHostileTargets.
func TestHostileInputCatalogue(t *testing.T) {
	f := newFixture(t, func(c *access.Config) { c.FailLimit = 1 << 20 })
	deep := strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 100)
	propose := func(body string) func(t *testing.T) resp {
		return func(t *testing.T) resp { return f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, []byte(body)) }
	}
	withAuth := func(method, path, auth string) func(t *testing.T) resp {
		return func(t *testing.T) resp { return f.rawAuth(t, method, path, auth) }
	}
	tests := []struct {
		name string
		do   func(t *testing.T) resp
		code int
		err  string
	}{
		{"body_over_the_limit", propose(`{"action":"fs.read","target":"` + strings.Repeat("a", api.MaxBody) + `"}`), 413, "body_too_large"},
		{"invalid_json", propose(`{"action":"fs.read",`), 400, "invalid_request"},
		{"trailing_data", propose(`{"action":"fs.read","target":"a","idempotency_key":"k"} {}`), 400, "invalid_request"},
		{"duplicate_keys", propose(`{"action":"fs.read","action":"fs.delete","target":"a","idempotency_key":"k"}`), 400, "invalid_request"},
		{"unknown_fields", propose(`{"action":"fs.read","target":"a","idempotency_key":"k","sudo":true}`), 400, "invalid_request"},
		{"wrong_types", propose(`{"action":"fs.read","target":5,"idempotency_key":"k"}`), 400, "invalid_request"},
		{"deep_nesting", propose(`{"action":"fs.read","target":"a","idempotency_key":"k","params":` + deep + `}`), 400, "invalid_request"},
		{"huge_string", propose(`{"action":"fs.read","target":"` + strings.Repeat("a", 100_000) + `","idempotency_key":"k"}`), 400, "invalid_request"},
		{"nul_byte", propose(`{"action":"fs.read","target":"a\u0000b","idempotency_key":"k"}`), 400, "invalid_request"},
		{"invalid_utf8", propose("{\"action\":\"fs.read\",\"target\":\"a\xff\xfe\",\"idempotency_key\":\"k\"}"), 400, "invalid_request"},
		{"bidi_override_in_target", propose(`{"action":"fs.read","target":"invoice\u202etxt.exe","idempotency_key":"k"}`), 400, "invalid_request"},
		{"zero_width_in_target", propose(`{"action":"fs.delete","target":"re\u200bport.txt","idempotency_key":"k"}`), 400, "invalid_request"},
		{"control_in_target", propose(`{"action":"fs.read","target":"a\u001b[2Jb","idempotency_key":"k"}`), 400, "invalid_request"},
		{"hidden_character_in_param", propose(`{"action":"http.post","target":"http://127.0.0.1:9/x","params":{"content_type":"text/plain\u2067"},"idempotency_key":"k"}`), 400, "invalid_request"},
		{"unknown_action", propose(`{"action":"sh.exec","target":"rm -rf /","idempotency_key":"k"}`), 400, "unknown_action"},
		{"idempotency_key_injection", propose(`{"action":"fs.read","target":"a","idempotency_key":"k.>\r\nX: y"}`), 400, "invalid_request"},
		{"tenant_injection_wildcard", func(t *testing.T) resp {
			return f.do(t, "POST", "/v1/tenants/acme.%3E/intents", agentKey, []byte(`{}`))
		}, 400, "invalid_tenant"},
		{"tenant_injection_crlf", func(t *testing.T) resp {
			return f.do(t, "POST", "/v1/tenants/acme%0D%0AX:%20y/intents", agentKey, []byte(`{}`))
		}, 400, "invalid_tenant"},
		{"tenant_injection_star", func(t *testing.T) resp {
			return f.do(t, "GET", "/v1/tenants/*/audit/export", agentKey, nil)
		}, 400, "invalid_tenant"},
		{"key_injection_wildcard", withAuth("GET", "/v1/tenants/acme/audit/export", "Bearer exo_>"), 401, "unauthenticated"},
		{"key_injection_subject", withAuth("GET", "/v1/tenants/acme/audit/export", "Bearer exo_0123456789abcdef_"+strings.Repeat("A", 40)+".*>"), 401, "unauthenticated"},
		{"key_injection_other_scheme", withAuth("GET", "/v1/tenants/acme/audit/export", "Basic "+agentKey), 401, "unauthenticated"},
		{"header_injection_nul", withAuth("GET", "/v1/tenants/acme/audit/export", "Bearer exo_agent\x00x"), 400, ""},
		// A bare LF ends a header line (net/http is lenient there), so this
		// is two headers: the injected one must not steer the response.
		{"header_injection_bare_lf", withAuth("GET", "/v1/tenants/acme/audit/export", "Bearer exo_nobody\nX-Request-Id: evil\nX-Evil: 1"), 401, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, chain, runs := f.stateSnapshot(t), f.export(t), f.exec.runs
			r := tt.do(t)
			if r.code != tt.code || (tt.err != "" && errCode(r) != tt.err) {
				t.Fatalf("got %d %q (%.200s), want %d %q", r.code, errCode(r), r.raw, tt.code, tt.err)
			}
			if r.header.Get("X-Evil") != "" || r.header.Get("X-Request-Id") == "evil" {
				t.Fatalf("an injected header steered the response: %v", r.header)
			}
			if f.stateSnapshot(t) != state || !bytes.Equal(f.export(t), chain) || f.exec.runs != runs {
				t.Fatal("the refused request left state behind")
			}
		})
	}
}

// TestHiddenCharactersRefusedAtPropose: a target or a parameter holding a
// bidi, invisible or control character is refused at propose with 400
// invalid_request, reason hidden_character and the field's pointer, and
// nothing is stored or audited; a file's content may hold any text.
func TestHiddenCharactersRefusedAtPropose(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"action": "fs.write", "target": "invoice\u202Etxt.exe", "params": map[string]string{"content": "x"}}, "/target"},
		{map[string]any{"action": "fs.read", "target": "\uFEFFa.txt"}, "/target"},
		{map[string]any{"action": "http.post", "target": "http://127.0.0.1:9/x", "params": map[string]string{"content_type": "text/plain\u00AD"}}, "/params/content_type"},
	} {
		tt.body["idempotency_key"] = "hidden"
		state, chain := f.stateSnapshot(t), f.export(t)
		r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, mustJSON(tt.body))
		e, _ := r.body["error"].(map[string]any)
		msg, _ := e["message"].(string)
		reasons, _ := e["reasons"].([]any)
		if r.code != 400 || errCode(r) != "invalid_request" || len(reasons) != 1 || reasons[0] != "hidden_character" || !strings.HasPrefix(msg, `field "`+tt.field+`"`) {
			t.Fatalf("%v: got %d %s, want 400 invalid_request, reason hidden_character, field %s", tt.body, r.code, r.raw, tt.field)
		}
		if f.stateSnapshot(t) != state || !bytes.Equal(f.export(t), chain) {
			t.Fatalf("%v: the refused proposal left state behind", tt.body)
		}
		t.Log(msg)
	}
	r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, mustJSON(map[string]any{"action": "fs.write", "target": "notes/שלום.txt",
		"params": map[string]string{"content": "line 1\n\tline 2 \u202Bשלום\u202C\n"}, "idempotency_key": "text"}))
	if r.code != 201 {
		t.Fatalf("a right-to-left name with text content: %d %s, want 201", r.code, r.raw)
	}
}

// TestHostileTargetsRefusedAtTheGate: an fs target escaping the sandbox
// is recorded (the proposal and its DENY preview are the audit trail of the
// attempt) but can never execute: 403 blocked with the reason, executor
// never called.
func TestHostileTargetsRefusedAtTheGate(t *testing.T) {
	f := newFixture(t)
	for i, target := range []string{"../../etc/passwd", "/etc/passwd", `..\..\x`, "a/../../b", "sub/../../../x"} {
		r := f.do(t, "POST", "/v1/tenants/acme/intents", agentKey, mustJSON(map[string]any{
			"action": "fs.read", "target": target, "idempotency_key": fmt.Sprintf("trav-%d", i)}))
		if r.code == 400 && errCode(r) == "invalid_request" {
			continue // refused at the edge: fine too
		}
		if r.code != 201 {
			t.Fatalf("target %q: propose %d %s", target, r.code, r.raw)
		}
		id := r.body["intent"].(map[string]any)["id"].(string)
		if v := r.body["preview"].(map[string]any); v["verdict"] != "DENY" {
			t.Fatalf("target %q: preview %v", target, v)
		}
		runs := f.exec.runs
		r = f.do(t, "POST", "/v1/tenants/acme/intents/"+id+"/execute", agentKey, nil)
		if r.code != 403 || errCode(r) != "blocked" || !strings.Contains(string(r.raw), "fs-outside-sandbox") {
			t.Fatalf("target %q: execute %d %s", target, r.code, r.raw)
		}
		if f.exec.runs != runs {
			t.Fatalf("target %q reached the executor", target)
		}
	}
}

// TestSlowClientsAreCut: with the production server settings (only the
// durations shortened for the test), a client that sends its headers or
// its body byte by byte is cut off, and a slow body is answered 408
// request_timeout (never a 500) without state.
func TestSlowClientsAreCut(t *testing.T) {
	f := newFixture(t)
	prod := api.NewHTTPServer("", f.handler)
	if prod.ReadHeaderTimeout <= 0 || prod.ReadTimeout <= 0 || prod.WriteTimeout <= 0 || prod.IdleTimeout <= 0 || prod.MaxHeaderBytes <= 0 {
		t.Fatalf("production server limits not all set: %+v", prod)
	}
	hs := api.NewHTTPServer("", f.handler)
	hs.ReadHeaderTimeout, hs.ReadTimeout = 300*time.Millisecond, time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	addr := ln.Addr().String()

	// trickle writes s one byte every 50 ms until the server hangs up or
	// the budget runs out, and returns what the server answered.
	trickle := func(t *testing.T, head, slow string) (string, time.Duration) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(slow) && time.Since(start) < 10*time.Second; i++ {
			if _, err := c.Write([]byte{slow[i]}); err != nil {
				break // the server hung up
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		out, _ := io.ReadAll(c)
		return string(out), time.Since(start)
	}
	t.Run("slow_headers", func(t *testing.T) {
		out, took := trickle(t, "GET /v1/tenants/acme/audit/export HTTP/1.1\r\n", "Host: x\r\nAuthorization: Bearer exo_agent\r\nX-Pad: "+strings.Repeat("a", 200)+"\r\n\r\n")
		if strings.Contains(out, "200 OK") || took > 9*time.Second {
			t.Fatalf("slow headers were served or not cut (after %v): %.200q", took, out)
		}
	})
	t.Run("slow_body", func(t *testing.T) {
		state, chain := f.stateSnapshot(t), f.export(t)
		body := `{"action":"fs.read","target":"a","idempotency_key":"slow-body"}` + strings.Repeat(" ", 200)
		head := fmt.Sprintf("POST /v1/tenants/acme/intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer exo_agent\r\nContent-Length: %d\r\n\r\n", len(body))
		out, took := trickle(t, head, body)
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("no HTTP answer to a slow body after %v: %v (%.200q)", took, err, out)
		}
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(out, `"request_timeout"`) || took > 9*time.Second {
			t.Fatalf("slow body answered %d after %v: %.300q", resp.StatusCode, took, out)
		}
		if f.stateSnapshot(t) != state || !bytes.Equal(f.export(t), chain) {
			t.Fatal("the cut request left state behind")
		}
	})
	t.Run("oversized_headers", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 128<<10))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("oversized headers: %v %v", resp, err)
		}
	})
}

// rawAuth sends a request whose Authorization header is written verbatim
// (the Go client refuses to send malformed header values).
func (f *fixture) rawAuth(t *testing.T, method, path, auth string) resp {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nConnection: close\r\n\r\n", method, path, auth)
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return readResp(r)
}

// export is the acme chain exactly as stored.
func (f *fixture) export(t *testing.T) []byte {
	t.Helper()
	return f.do(t, "GET", "/v1/tenants/acme/audit/export", adminKey, nil).raw
}
