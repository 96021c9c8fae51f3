package executor

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

var (
	acme = tenant.MustParse("acme")
	beta = tenant.MustParse("beta")
)

// world is a sandbox dir with an "outside" dir beside it holding a secret.
type world struct {
	sb      *sandbox
	outside string
	secret  string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(outside, 0o750); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "secret.txt")
	if err := os.WriteFile(secret, []byte("secret"), 0o640); err != nil {
		t.Fatal(err)
	}
	return &world{sb: &sandbox{dir: filepath.Join(base, "sandbox"), maxFile: 1 << 10, maxContent: 1 << 10}, outside: outside, secret: secret}
}

func (w *world) untouched(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(w.secret)
	if err != nil || string(b) != "secret" {
		t.Fatalf("outside file changed: %q, %v", b, err)
	}
	entries, _ := os.ReadDir(w.outside)
	if len(entries) != 1 {
		t.Fatalf("outside dir has %d entries, want 1", len(entries))
	}
}

func TestSandboxRoundTrip(t *testing.T) {
	w := newWorld(t)
	out, err := w.sb.write(t.Context(), acme, "notes/deep/a.txt", "hello")
	if err != nil || out["bytes"] != "5" {
		t.Fatalf("write = %v, %v", out, err)
	}
	got, err := w.sb.read(t.Context(), acme, "notes/deep/a.txt")
	if err != nil || got["content"] != "hello" || got["sha256"] != out["sha256"] {
		t.Fatalf("read = %v, %v", got, err)
	}
	if _, err := w.sb.read(t.Context(), beta, "notes/deep/a.txt"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("tenant beta read acme's file: %v", err)
	}
	if _, err := w.sb.remove(t.Context(), acme, "notes/deep/a.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.sb.read(t.Context(), acme, "notes/deep/a.txt"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read after delete: %v", err)
	}
	if _, err := w.sb.remove(t.Context(), acme, "notes"); err == nil {
		t.Fatal("deleted a directory")
	}
	if _, err := w.sb.write(t.Context(), acme, "big", strings.Repeat("x", 2<<10)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized write: %v", err)
	}
}

func TestSandboxEscapes(t *testing.T) {
	w := newWorld(t)
	// Symlinks planted inside acme's sandbox that point out of it.
	root := filepath.Join(w.sb.dir, "acme")
	if err := os.MkdirAll(root, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(w.secret, filepath.Join(root, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(w.outside, filepath.Join(root, "linkdir")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.sb.write(t.Context(), beta, "b.txt", "beta's"); err != nil {
		t.Fatal(err)
	}
	targets := []string{
		"../outside/secret.txt", "/etc/passwd", w.secret, "a/../../outside/secret.txt", "", ".", "a\x00b",
		"..", `..\outside\secret.txt`, "link.txt", "linkdir/secret.txt", "linkdir/new.txt", "../beta/b.txt",
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			if out, err := w.sb.read(t.Context(), acme, target); err == nil {
				t.Errorf("read %q succeeded: %v", target, out)
			}
			// Writing or deleting "link.txt" replaces or removes the link
			// itself, inside the sandbox; what it points to must not change.
			if _, err := w.sb.write(t.Context(), acme, target, "pwned"); err == nil && target != "link.txt" {
				t.Errorf("write %q succeeded", target)
			}
			if _, err := w.sb.remove(t.Context(), acme, target); err == nil && target != "link.txt" {
				t.Errorf("delete %q succeeded", target)
			}
			w.untouched(t)
			if b, _ := os.ReadFile(filepath.Join(w.sb.dir, "beta", "b.txt")); string(b) != "beta's" {
				t.Fatal("tenant beta's file changed")
			}
		})
	}
}

func TestRunRefusesPermitsTheGateDidNotMint(t *testing.T) {
	reg, err := New(Config{SandboxDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range action.Builtin().List() {
		e, ok := reg.Lookup(r.Type)
		if !ok {
			t.Fatalf("no executor for %s", r.Type)
		}
		for _, p := range []*gate.Permit{nil, {}} {
			if _, err := e.Run(context.Background(), p); !errors.Is(err, ErrNoPermit) {
				t.Errorf("%s Run(%v) = %v, want ErrNoPermit", r.Type, p, err)
			}
		}
	}
	if _, ok := reg.Lookup("shell.exec"); ok {
		t.Fatal("unknown action has an executor")
	}
}

// TestEveryKindIsImplemented: each executor kind internal/action declares
// has exactly one implementation here, and nothing else does.
func TestEveryKindIsImplemented(t *testing.T) {
	for _, k := range action.Kinds() {
		if _, ok := implementations[k]; !ok {
			t.Errorf("executor kind %s has no implementation", k)
		}
	}
	for k := range implementations {
		if !slices.Contains(action.Kinds(), k) {
			t.Errorf("implementation of %s, which internal/action does not declare", k)
		}
	}
}

// TestNewBindsEachRegistration: New gives every registration of its
// registry an executor of the declared kind, bound to the type (and the
// method), and none to a type the registry lacks.
func TestNewBindsEachRegistration(t *testing.T) {
	notes := action.Registration{Type: "notes.read", Class: contract.A0, ReadOnly: true, Description: "a note",
		Effect: policy.FS, Executor: action.Executor{Kind: action.SandboxRead}}
	actions, err := action.New(append(action.Builtin().List(), notes)...)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	reg, err := New(Config{Actions: actions, SandboxDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		typ  string
		want gate.Executor
	}{
		{action.FSRead, fsRead{action: action.FSRead}},
		{action.FSWrite, fsWrite{action: action.FSWrite}},
		{action.HTTPGet, httpRequest{action: action.HTTPGet, method: "GET"}},
		{action.HTTPPost, httpRequest{action: action.HTTPPost, method: "POST"}},
		{action.FSDelete, fsDelete{action: action.FSDelete}},
		{"notes.read", fsRead{action: "notes.read"}},
	}
	for _, tt := range tests {
		got, ok := reg.Lookup(tt.typ)
		if !ok {
			t.Fatalf("no executor for %s", tt.typ)
		}
		// Compare without the shared sandbox and client.
		switch e := got.(type) {
		case fsRead:
			if e.s == nil || e.s.dir != dir {
				t.Errorf("%s: sandbox %+v", tt.typ, e.s)
			}
			e.s = nil
			got = e
		case fsWrite:
			e.s = nil
			got = e
		case fsDelete:
			e.s = nil
			got = e
		case httpRequest:
			if e.h == nil {
				t.Errorf("%s: no http client", tt.typ)
			}
			e.h = nil
			got = e
		}
		if got != tt.want {
			t.Errorf("%s: executor %#v, want %#v", tt.typ, got, tt.want)
		}
	}
	if len(reg.byAction) != len(tests) {
		t.Errorf("%d executors, want %d", len(reg.byAction), len(tests))
	}
	only, err := New(Config{Actions: must(action.New(notes)), SandboxDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := only.Lookup(action.FSRead); ok {
		t.Error("an executor for a type the registry lacks")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestHTTPAllowlist(t *testing.T) {
	var hits int
	allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		switch r.URL.Path {
		case "/big":
			io.WriteString(w, strings.Repeat("x", 2048))
		case "/redirect":
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case "/fail":
			http.Error(w, "nope", 500)
		default:
			io.WriteString(w, "ok")
		}
	}))
	defer allowed.Close()
	var otherHits int
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { otherHits++ }))
	defer other.Close()
	h := newHTTPClient(Config{Allowlist: []string{strings.TrimPrefix(allowed.URL, "http://")}, HTTPTimeout: 5 * time.Second, MaxOutputBytes: 1024 + outputKeys})

	if out, err := h.do(context.Background(), request{method: "GET", url: allowed.URL + "/x"}); err != nil || out["body"] != "ok" || out["status"] != "200" {
		t.Fatalf("allowed GET = %v, %v", out, err)
	}
	if out, err := h.do(context.Background(), request{method: "POST", url: allowed.URL + "/echo", body: new(`{"a":1}`)}); err != nil || out["body"] != `{"a":1}` {
		t.Fatalf("POST = %v, %v", out, err)
	}
	tests := []struct {
		name, url string
		want      error
	}{
		{"host not allowlisted", other.URL + "/x", ErrHostNotAllowed},
		{"redirect to a host not allowlisted", allowed.URL + "/redirect?to=" + other.URL + "/x", ErrHostNotAllowed},
		{"credentials in URL", strings.Replace(allowed.URL, "http://", "http://user:pw@", 1), ErrHostNotAllowed},
		{"not http", "file:///etc/passwd", ErrHostNotAllowed},
		{"private address", "http://10.0.0.1/x", ErrHostNotAllowed},
		// Internal targets behind a redirect (loopback only: nothing here
		// may reach another network even if the check were broken).
		{"redirect to an internal address", allowed.URL + "/redirect?to=http://127.0.0.2:9/x", ErrHostNotAllowed},
		{"redirect to a name of an internal address", allowed.URL + "/redirect?to=http://localhost" + allowed.URL[strings.LastIndex(allowed.URL, ":"):] + "/x", ErrHostNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := h.do(context.Background(), request{method: "GET", url: tt.url}); !errors.Is(err, tt.want) {
				t.Fatalf("GET %s = %v, want %v", tt.url, err, tt.want)
			}
		})
	}
	if _, err := h.do(context.Background(), request{method: "GET", url: allowed.URL + "/fail"}); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("500 response = %v", err)
	}
	if otherHits != 0 {
		t.Fatalf("a host outside the allowlist received %d requests", otherHits)
	}
}

// TestDialRefusesInternalAddressesNotAllowlisted: a name allowlisted as a
// host ("localhost") that resolves to loopback is refused at dial time,
// because only literal internal addresses may be allowlisted.
func TestDialRefusesInternalAddressesNotAllowlisted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	h := newHTTPClient(Config{Allowlist: []string{"localhost:" + port}, HTTPTimeout: 5 * time.Second, MaxOutputBytes: 1024 + outputKeys})
	if _, err := h.do(context.Background(), request{method: "GET", url: "http://localhost:" + port + "/"}); !errors.Is(err, ErrHostNotAllowed) {
		t.Fatalf("GET localhost = %v, want ErrHostNotAllowed at dial", err)
	}
}

func TestHTTPTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	h := newHTTPClient(Config{Allowlist: []string{strings.TrimPrefix(srv.URL, "http://")}, HTTPTimeout: 200 * time.Millisecond, MaxOutputBytes: 1024 + outputKeys})
	if _, err := h.do(context.Background(), request{method: "GET", url: srv.URL}); err == nil {
		t.Fatal("a hanging server did not time out")
	}
}

// FuzzSandboxPath: no target, however hostile, creates anything outside
// the tenant's sandbox.
func FuzzSandboxPath(f *testing.F) {
	for _, s := range []string{"a.txt", "../x", "a/../../x", "/abs", "a/b/c", "..", "./a", "a//b", "a/./../b", "\x00"} {
		f.Add(s)
	}
	base := f.TempDir()
	sb := &sandbox{dir: filepath.Join(base, "sandbox"), maxFile: 64, maxContent: 64}
	sibling := filepath.Join(base, "sibling")
	if err := os.MkdirAll(sibling, 0o750); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, target string) {
		_, _ = sb.write(t.Context(), acme, target, "x")
		_, _ = sb.read(t.Context(), acme, target)
		_, _ = sb.remove(t.Context(), acme, target)
		entries, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "sandbox" && e.Name() != "sibling" {
				t.Fatalf("target %q created %s outside the sandbox", target, e.Name())
			}
		}
		if s, _ := os.ReadDir(sibling); len(s) != 0 {
			t.Fatalf("target %q wrote into a sibling dir", target)
		}
		if s, _ := os.ReadDir(filepath.Join(base, "sandbox")); len(s) > 1 {
			t.Fatalf("target %q created a second tenant dir", target)
		}
	})
}

// TestLargeOutputsAreCut: a file (fs.read) or a response body (http.get)
// that does not fit the output budget is cut to the longest prefix that
// does, JSON-encoded, never inside a character, and marked truncated with
// its original size; what fits is returned whole, unmarked. The whole
// output stays within MaxOutputBytes however the content escapes.
func TestLargeOutputsAreCut(t *testing.T) {
	const maxOutput = 4<<10 + outputKeys
	budget := contentBudget(maxOutput)
	tests := []struct {
		name      string
		content   string
		truncated bool
	}{
		{"small", "hello", false},
		{"exactly the budget", strings.Repeat("x", int(budget)-2), false},
		{"one byte over", strings.Repeat("x", int(budget)-1), true},
		{"plain text, larger", strings.Repeat("x", 3*int(budget)), true},
		{"html", strings.Repeat("<p>&amp;</p>", int(budget)), true},
		{"control characters", strings.Repeat("\x01\n", int(budget)), true},
		{"binary", strings.Repeat("\xff\xfe\x00", int(budget)), true},
		{"multi-byte characters across the cut", strings.Repeat("世界🌍", int(budget)), true},
	}
	sb := &sandbox{dir: t.TempDir(), maxFile: 1 << 20, maxContent: budget}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, tt := range tests {
			if r.URL.Path == "/"+strings.ReplaceAll(tt.name, " ", "-") {
				if r.URL.Query().Has("chunked") {
					w.(http.Flusher).Flush() // no Content-Length: the size is unknown
				} else {
					w.Header().Set("Content-Length", strconv.Itoa(len(tt.content)))
				}
				io.WriteString(w, tt.content)
			}
		}
	}))
	defer srv.Close()
	h := newHTTPClient(Config{Allowlist: []string{strings.TrimPrefix(srv.URL, "http://")}, HTTPTimeout: 5 * time.Second, MaxOutputBytes: maxOutput})
	if err := os.MkdirAll(filepath.Join(sb.dir, "acme"), 0o750); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		name := strings.ReplaceAll(tt.name, " ", "-")
		if err := os.WriteFile(filepath.Join(sb.dir, "acme", name), []byte(tt.content), 0o640); err != nil {
			t.Fatal(err)
		}
		for _, via := range []struct {
			executor, key string
			run           func() (map[string]string, error)
		}{
			{"fs.read", "content", func() (map[string]string, error) { return sb.read(t.Context(), acme, name) }},
			{"http.get", "body", func() (map[string]string, error) {
				return h.do(t.Context(), request{method: "GET", url: srv.URL + "/" + name})
			}},
		} {
			t.Run(via.executor+"/"+tt.name, func(t *testing.T) {
				out, err := via.run()
				if err != nil {
					t.Fatal(err)
				}
				got := out[via.key]
				if size := gate.OutputSize(out); size > maxOutput {
					t.Fatalf("output takes %d bytes encoded, more than %d", size, maxOutput)
				}
				if n := int64(contract.JSONLen(got)); n > budget {
					t.Fatalf("%s takes %d bytes encoded, more than %d", via.key, n, budget)
				}
				if out["sha256"] != digest([]byte(got))["sha256"] || out["bytes"] != strconv.Itoa(len(got)) {
					t.Fatalf("digest %s/%s does not describe the %s returned", out["bytes"], out["sha256"], via.key)
				}
				if !tt.truncated {
					if got != tt.content || out[gate.OutputTruncated] != "" || out[gate.OutputOriginalBytes] != "" {
						t.Fatalf("fits, but came back cut or marked: %d of %d bytes, %v", len(got), len(tt.content), out[gate.OutputTruncated])
					}
					return
				}
				if out[gate.OutputTruncated] != "true" || out[gate.OutputOriginalBytes] != strconv.Itoa(len(tt.content)) {
					t.Fatalf("marker %q, original_bytes %q; want true and %d", out[gate.OutputTruncated], out[gate.OutputOriginalBytes], len(tt.content))
				}
				if via.executor == "http.get" {
					// Without a Content-Length the original size is unknown.
					chunked, err := h.do(t.Context(), request{method: "GET", url: srv.URL + "/" + name + "?chunked"})
					if err != nil || chunked[gate.OutputTruncated] != "true" || chunked[gate.OutputOriginalBytes] != "" || chunked["body"] != got {
						delete(chunked, "body")
						t.Fatalf("chunked: %v, %v; want the same cut, marked, without original_bytes", chunked, err)
					}
				}
				if !strings.HasPrefix(tt.content, got) || len(got) == 0 {
					t.Fatalf("%s is not a prefix of the content (%d bytes)", via.key, len(got))
				}
				// The longest prefix: the next character would not fit.
				next := tt.content[len(got):]
				_, size := utf8.DecodeRuneInString(next)
				if int64(contract.JSONLen(tt.content[:len(got)+size])) <= budget {
					t.Fatalf("cut at %d bytes, but the next character fits too", len(got))
				}
				if utf8.ValidString(tt.content) && !utf8.ValidString(got) {
					t.Fatal("a character was cut in half")
				}
			})
		}
	}
}
