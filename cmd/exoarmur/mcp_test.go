package main_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
)

const webToken = "web-upstream-token-e2e-42"

// buildUpstream builds the test's Go SDK MCP server (testdata/mcpupstream).
func buildUpstream(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mcpupstream")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/mcpupstream").CombinedOutput(); err != nil {
		t.Fatalf("build the upstream: %v\n%s", err, out)
	}
	return bin
}

type bearer struct{ key string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return http.DefaultTransport.RoundTrip(r)
}

func mcpSession(t *testing.T, addr, key string) *sdk.ClientSession {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "e2e-agent", Version: "1"}, nil)
	s, err := c.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: "http://" + addr + "/v1/tenants/acme/mcp",
		HTTPClient: &http.Client{Transport: bearer{key}}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func readyzBody(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func textOf(r *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func call(t *testing.T, s *sdk.ClientSession, tool string, args map[string]any) *sdk.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := s.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	return r
}

var intentID = regexp.MustCompile(`intent (in_[A-Za-z0-9_-]+)`)

// TestMCPGatewayEndToEnd: a Go SDK client over Streamable HTTP to the
// built server, fronting a Go SDK server over stdio and one over
// Streamable HTTP (its bearer token injected by the gateway): the list is
// filtered by the key's grants (A0, A1: the web server's A2 append is not
// shown) and leaves out a tool with an invalid schema; an A0 call runs
// each time; an A1 call is pending, an operator approves it through REST,
// the same call then runs once and its repeats answer the recorded
// outcome (one effect); a stdio upstream sees none of the gateway's
// environment; an oversized result, a hang (deadline) and a crash are
// tool errors, the crashed upstream is restarted; an unknown tool is
// -32602; with the tenant's kill switch engaged a call is blocked; the
// chain verifies with every call in it.
func TestMCPGatewayEndToEnd(t *testing.T) {
	up := buildUpstream(t)
	dir := t.TempDir()
	effects := filepath.Join(dir, "effects.txt")
	webAddr := freePort(t)
	web := exec.Command(up, "-http", webAddr, "-token", webToken, "-effects", filepath.Join(dir, "web-effects.txt"))
	if err := web.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = web.Process.Kill(); _ = web.Wait() })
	cfg := filepath.Join(dir, "mcp.yaml")
	if err := os.WriteFile(cfg, []byte(`servers:
  local:
    command: [`+up+`, -effects, `+effects+`, -big, "10000000"]
    tools: {echo: A0, env: A0, big: A0, hang: A0, crash: A1, append: A1}
  web:
    url: http://`+webAddr+`/mcp
    headers: {Authorization: "Bearer ${secret:WEB_TOKEN}"}
    trusted: true
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if r, err := http.Get("http://" + webAddr + "/mcp"); err == nil {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the web upstream did not start")
		}
	}

	dataDir := filepath.Join(dir, "data")
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	op := mkKey(t, dataDir, "op", "operator", "*", "--tenant", "acme")
	bot := mkKey(t, dataDir, "bot", "agent", "A0,A1", "--tenant", "acme")
	addr := freePort(t)
	srv := startReady(t, []string{"WEB_TOKEN=" + webToken, "EXOARMUR_GATEWAY_SECRET=do-not-leak"}, dataDir, addr, "--mcp-config", cfg, "--exec-timeout", "2s")
	goLive(t, addr, root)
	s := mcpSession(t, addr, bot)

	// The list: the key's tools only, the invalid schema left out.
	lt, err := s.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range lt.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if want := "mcp.local.append mcp.local.big mcp.local.crash mcp.local.echo mcp.local.env mcp.local.hang mcp.web.echo"; strings.Join(names, " ") != want {
		t.Fatalf("tools/list = %v, want %s\n%s", names, want, srv.logs.String())
	}
	if !strings.Contains(srv.logs.String(), "bad_schema") {
		t.Error("the tool with an invalid schema was not logged")
	}

	// A0 runs each time, on both upstreams.
	for range 2 {
		if r := call(t, s, "mcp.local.echo", map[string]any{"text": "hi"}); r.IsError || textOf(r) != `echo: {"text":"hi"}` {
			t.Fatalf("echo: %+v %q", r, textOf(r))
		}
	}
	if r := call(t, s, "mcp.web.echo", map[string]any{"text": "w"}); r.IsError || !strings.HasPrefix(textOf(r), "echo: ") {
		t.Fatalf("web echo (its token injected by the gateway): %q", textOf(r))
	}
	// The stdio upstream's environment: PATH and HOME only.
	if r := call(t, s, "mcp.local.env", nil); r.IsError || textOf(r) != "HOME,PATH" {
		t.Fatalf("the stdio upstream's environment holds %q", textOf(r))
	}

	// A1: pending, approved through REST, then once.
	args := map[string]any{"text": "one"}
	r := call(t, s, "mcp.local.append", args)
	m := intentID.FindStringSubmatch(textOf(r))
	if !r.IsError || !strings.Contains(textOf(r), "approval pending") || m == nil {
		t.Fatalf("first append: %+v %q", r, textOf(r))
	}
	if b, _ := os.ReadFile(effects); len(b) != 0 {
		t.Fatalf("the append ran before its approval: %q", b)
	}
	seen, err := srv.client(op).GetIntent(t.Context(), "acme", m[1])
	if err != nil || seen.Intent.Params[action.MCPArguments] != `{"text":"one"}` || seen.Intent.Target != "mcp.local.append" {
		t.Fatalf("the operator sees %+v (%v)", seen.Intent, err)
	}
	srv.approveVia(op, "acme", m[1])
	for i := range 3 {
		if r := call(t, s, "mcp.local.append", args); r.IsError || textOf(r) != "appended" {
			t.Fatalf("append after approval #%d: %q", i, textOf(r))
		}
	}
	if b, _ := os.ReadFile(effects); string(b) != "{\"text\":\"one\"}\n" {
		t.Fatalf("effects %q: the approved call must run exactly once", b)
	}

	// Failures are tool errors.
	if r := call(t, s, "mcp.local.big", nil); !r.IsError || !strings.Contains(textOf(r), "larger than") {
		t.Fatalf("oversized (the result must not fit the embedded store's 8 MiB budget): isError %v, %.200q", r.IsError, textOf(r))
	}
	start := time.Now()
	if r := call(t, s, "mcp.local.hang", nil); !r.IsError || time.Since(start) > 15*time.Second {
		t.Fatalf("hang: %q after %v", textOf(r), time.Since(start))
	}
	// The upstream crashes mid-call (A1: approved first): a tool error,
	// the execution failed, and a repeat answers that outcome without
	// calling the upstream again (it would crash again: no restart).
	r = call(t, s, "mcp.local.crash", nil)
	if m = intentID.FindStringSubmatch(textOf(r)); m == nil {
		t.Fatalf("crash before approval: %q", textOf(r))
	}
	srv.approveVia(op, "acme", m[1])
	if r := call(t, s, "mcp.local.crash", nil); !r.IsError || !strings.Contains(textOf(r), "the tool may have run") {
		t.Fatalf("crash: %q", textOf(r))
	}
	crashed, err := srv.client(op).GetIntent(t.Context(), "acme", m[1])
	if err != nil || crashed.Result == nil || crashed.Result.Status != contract.StatusFailed {
		t.Fatalf("the crashed call's execution: %+v %v", crashed.Result, err)
	}
	waitRestarts := func(n int) {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if strings.Contains(readyzBody(t, addr), `"local":{"state":"up"`) && strings.Contains(readyzBody(t, addr), `"restarts":`+strconv.Itoa(n)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the crashed upstream was not restarted (%d): %s", n, readyzBody(t, addr))
			}
		}
	}
	waitRestarts(1)
	if r := call(t, s, "mcp.local.crash", nil); !r.IsError || !strings.Contains(textOf(r), "the tool may have run") {
		t.Fatalf("crash repeated: %q", textOf(r))
	}
	time.Sleep(500 * time.Millisecond)
	if h := readyzBody(t, addr); !strings.Contains(h, `"restarts":1`) || !strings.Contains(h, `"local":{"state":"up"`) {
		t.Fatalf("the repeat re-ran the crashing call: %s", h)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if r := call(t, s, "mcp.local.echo", map[string]any{"text": "back"}); !r.IsError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the crashed upstream was not restarted\n%s", srv.logs.String())
		}
	}
	var rpcErr *jsonrpc.Error
	if _, err := s.CallTool(t.Context(), &sdk.CallToolParams{Name: "mcp.web.append", Arguments: map[string]any{}}); !errors.As(err, &rpcErr) || rpcErr.Code != -32602 {
		t.Fatalf("a tool the key may not use: %v, want -32602", err)
	}

	// The same over stdio: the Go SDK client starts `exoarmur mcp`, the
	// thin bridge to this server's endpoint.
	bridge := exec.Command(binary(t), "mcp", "--tenant", "acme", "--server", "http://"+addr)
	bridge.Env = append(os.Environ(), "EXOARMUR_API_KEY="+bot)
	bs, err := sdk.NewClient(&sdk.Implementation{Name: "e2e-stdio-agent", Version: "1"}, nil).Connect(t.Context(), &sdk.CommandTransport{Command: bridge}, nil)
	if err != nil {
		t.Fatalf("connect through exoarmur mcp: %v", err)
	}
	if blt, err := bs.ListTools(t.Context(), nil); err != nil || len(blt.Tools) != len(names) {
		t.Fatalf("tools/list through the bridge: %v %v", blt, err)
	}
	if r := call(t, bs, "mcp.local.echo", map[string]any{"text": "stdio"}); r.IsError || textOf(r) != `echo: {"text":"stdio"}` {
		t.Fatalf("echo through the bridge: %q", textOf(r))
	}
	if r := call(t, bs, "mcp.local.append", args); r.IsError || textOf(r) != "appended" {
		t.Fatalf("the approved append through the bridge (recorded outcome): %q", textOf(r))
	}
	_ = bs.Close()
	if b, _ := os.ReadFile(effects); string(b) != "{\"text\":\"one\"}\n" {
		t.Fatalf("effects %q after the bridge's repeat", b)
	}

	// The kill switch blocks.
	killswitch(t, addr, root, "engage", "--tenant", "acme", "--reason", "e2e stop")
	if r := call(t, s, "mcp.local.echo", map[string]any{"text": "stop"}); !r.IsError || !strings.Contains(textOf(r), "killswitch_tenant_engaged") {
		t.Fatalf("with the switch engaged: %q", textOf(r))
	}

	// Health, the chain, and no secret in the logs.
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	rep, err := srv.client(root).AuditVerify(t.Context(), "acme")
	if err != nil || !rep.Pass || rep.Decisions < 10 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if strings.Contains(srv.logs.String(), webToken) || strings.Contains(srv.logs.String(), "do-not-leak") {
		t.Fatal("the logs hold a secret")
	}
}

// nodeModules is the acceptance test's npm install (tests/mcp, npm ci).
func nodeModules(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../tests/mcp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "server-filesystem", "dist", "index.js")); err != nil {
		t.Fatalf("tests/mcp/node_modules is missing (%v): run `cd tests/mcp && npm ci` (.ci/run does)", err)
	}
	return dir
}

// tsClient runs the official TypeScript SDK client (tests/mcp/client.mjs).
func tsClient(t *testing.T, dir, url, key string, args ...string) string {
	t.Helper()
	cmd := exec.Command("node", append([]string{filepath.Join(dir, "client.mjs"), url}, args...)...)
	cmd.Env = append(os.Environ(), "EXOARMUR_API_KEY="+key)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestMCPAcceptanceTypeScript (issue 18's acceptance): the official
// TypeScript SDK client (@modelcontextprotocol/sdk 1.32.2) over Streamable
// HTTP to ExoArmur fronting the real @modelcontextprotocol/server-filesystem
// (2026.8.31) over stdio: the list is filtered by grants, read_text_file
// (A0) runs, write_file (A1) is pending until an operator approves through
// REST and then runs exactly once on retry (the file checked), a call is
// blocked while the tenant's kill switch is engaged, and the tenant's
// chain verifies with every call in it.
func TestMCPAcceptanceTypeScript(t *testing.T) {
	mods := nodeModules(t)
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed: %v", err)
	}
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	if err := os.MkdirAll(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "hello.txt"), []byte("hello from the share"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mcp.json")
	if err := os.WriteFile(cfg, []byte(`{"servers": {"fs": {"command": ["node", "`+filepath.Join(mods, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")+`", "`+shared+`"],
  "tools": {"read_text_file": "A0", "list_directory": "A0", "write_file": "A1"}}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	op := mkKey(t, dataDir, "op", "operator", "*", "--tenant", "acme")
	bot := mkKey(t, dataDir, "bot", "agent", "A0,A1", "--tenant", "acme")
	addr := freePort(t)
	srv := startReady(t, nil, dataDir, addr, "--mcp-config", cfg)
	goLive(t, addr, root)
	url := "http://" + addr + "/v1/tenants/acme/mcp"

	// Only the mapped A0/A1 tools and the unmapped ones are listed to a key
	// granted A0 and A1: the unmapped tools are A2 (untrusted server).
	list := tsClient(t, mods, url, bot, "list")
	if !strings.Contains(list, `"mcp.fs.read_text_file"`) || !strings.Contains(list, `"mcp.fs.write_file"`) || strings.Contains(list, `"mcp.fs.move_file"`) {
		t.Fatalf("tools/list = %s\n%s", list, srv.logs.String())
	}
	if out := tsClient(t, mods, url, bot, "call", "mcp.fs.read_text_file", `{"path": "`+filepath.Join(shared, "hello.txt")+`"}`); !strings.Contains(out, "hello from the share") || strings.Contains(out, `"isError":true`) {
		t.Fatalf("read_text_file: %s", out)
	}
	target := filepath.Join(shared, "out.txt")
	args := `{"path": "` + target + `", "content": "written once"}`
	out := tsClient(t, mods, url, bot, "call", "mcp.fs.write_file", args)
	m := intentID.FindStringSubmatch(out)
	if !strings.Contains(out, "approval pending") || m == nil {
		t.Fatalf("write_file before approval: %s", out)
	}
	if _, err := os.Stat(target); err == nil {
		t.Fatal("the file was written before the approval")
	}
	srv.approveVia(op, "acme", m[1])
	for range 2 {
		if out := tsClient(t, mods, url, bot, "call", "mcp.fs.write_file", args); strings.Contains(out, `"isError":true`) {
			t.Fatalf("write_file after approval: %s", out)
		}
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "written once" {
		t.Fatalf("out.txt = %q, %v", b, err)
	}
	recs := auditRecords(t, srv.client(root), "acme", 1000)
	if n := countKind(recs, "execution.started"); n != 2 { // the read and the one write
		t.Fatalf("%d executions started, want 2 (the read, the write once)", n)
	}
	killswitch(t, addr, root, "engage", "--tenant", "acme", "--reason", "acceptance stop")
	if out := tsClient(t, mods, url, bot, "call", "mcp.fs.read_text_file", `{"path": "`+filepath.Join(shared, "hello.txt")+`"}`); !strings.Contains(out, "killswitch_tenant_engaged") {
		t.Fatalf("with the switch engaged: %s", out)
	}
	rep, err := srv.client(root).AuditVerify(t.Context(), "acme")
	if err != nil || !rep.Pass || rep.Decisions == 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	// Outside the server: the store and an export replay with every call
	// in them, given the MCP configuration (its mapped tools); without it
	// the MCP decisions are of unknown actions and do not replay.
	srv.kill()
	export := filepath.Join(dir, "acme.jsonl")
	if code, out := exitOf(t, nil, "audit", "export", "--data-dir", dataDir, "--tenant", "acme", "--out", export); code != 0 {
		t.Fatalf("audit export: exit %d\n%s", code, out)
	}
	for _, from := range [][]string{{"--data-dir", dataDir}, {"--from-export", export}} {
		if code, out := exitOf(t, nil, append([]string{"replay", "--tenant", "acme", "--mcp-config", cfg, "--out", filepath.Join(dir, "r.json")}, from...)...); code != 0 {
			t.Fatalf("replay %v --mcp-config: exit %d\n%s", from, code, out)
		}
		if code, out := exitOf(t, nil, append([]string{"replay", "--tenant", "acme", "--out", filepath.Join(dir, "r.json")}, from...)...); code != 1 {
			t.Fatalf("replay %v without the MCP configuration: exit %d, want 1 (unknown actions)\n%s", from, code, out)
		}
	}
}

// TestMCPApprovalOfA0: where the tenant's approval rules require approval
// for A0 (testdata/approval_rules.json: acme), an A0 call is pending like
// any other, and the same call runs once an operator approved it (it is
// keyed by its principal, tool and arguments, not afresh each time).
func TestMCPApprovalOfA0(t *testing.T) {
	up := buildUpstream(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mcp.yaml")
	must(t, os.WriteFile(cfg, []byte("servers:\n  local:\n    command: ["+up+"]\n    tools: {echo: A0}\n"), 0o600))
	dataDir := filepath.Join(dir, "data")
	root := mkKey(t, dataDir, "root", "admin", "*", "--tenant", "system", "--tenant", "acme")
	op := mkKey(t, dataDir, "op", "operator", "*", "--tenant", "acme")
	bot := mkKey(t, dataDir, "bot", "agent", "A0", "--tenant", "acme")
	addr := freePort(t)
	srv := startReady(t, nil, dataDir, addr, "--mcp-config", cfg, "--approval-rules", filepath.Join("testdata", "approval_rules.json"))
	goLive(t, addr, root)
	s := mcpSession(t, addr, bot)
	r := call(t, s, "mcp.local.echo", map[string]any{"text": "may I"})
	m := intentID.FindStringSubmatch(textOf(r))
	if !r.IsError || !strings.Contains(textOf(r), "approval pending") || m == nil {
		t.Fatalf("an A0 call needing approval: %q", textOf(r))
	}
	srv.approveVia(op, "acme", m[1])
	if r := call(t, s, "mcp.local.echo", map[string]any{"text": "may I"}); r.IsError || textOf(r) != `echo: {"text":"may I"}` {
		t.Fatalf("the same call after approval: %q", textOf(r))
	}
}
