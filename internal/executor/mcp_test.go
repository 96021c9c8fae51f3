package executor

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

type fakeCaller struct{ calls int }

func (f *fakeCaller) CallTool(context.Context, string, string, json.RawMessage) (json.RawMessage, bool, error) {
	f.calls++
	return json.RawMessage(`{"content":[{"type":"text","text":"ok"}]}`), false, nil
}
func (f *fakeCaller) Secrets(string) map[string]string { return nil }

func mcpRegistry(t *testing.T) *action.Registry {
	t.Helper()
	reg, err := action.MCPToolRegistration("fs", "write_file", contract.A1, "writes a file")
	if err != nil {
		t.Fatal(err)
	}
	r, err := action.New(append(action.Builtin().List(), reg)...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestMCPToolNeedsACallerAndAPermit: an MCP tool without upstreams is
// refused at New; with them, a zero permit never reaches the upstream.
func TestMCPToolNeedsACallerAndAPermit(t *testing.T) {
	acts := mcpRegistry(t)
	if _, err := New(Config{Actions: acts, SandboxDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "no MCP upstreams") {
		t.Fatalf("New without a caller: %v", err)
	}
	fc := &fakeCaller{}
	r, err := New(Config{Actions: acts, SandboxDir: t.TempDir(), MCP: fc})
	if err != nil {
		t.Fatal(err)
	}
	ex, ok := r.Lookup(action.MCPToolType("fs", "write_file"))
	if !ok {
		t.Fatal("no executor for the MCP tool")
	}
	for _, p := range []*gate.Permit{nil, new(gate.Permit)} {
		if _, err := ex.Run(t.Context(), p); !errors.Is(err, ErrNoPermit) {
			t.Fatalf("Run(%v) = %v, want ErrNoPermit", p, err)
		}
	}
	if fc.calls != 0 {
		t.Fatalf("the upstream was called %d times without a permit", fc.calls)
	}
}

func TestMCPArgumentsOf(t *testing.T) {
	for _, ok := range []string{`{}`, `{"a":1,"b":"x"}`} {
		if _, err := action.MCPArgumentsOf(map[string]string{action.MCPArguments: ok}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []map[string]string{nil, {"arguments": `{"b":1,"a":2}`}, {"arguments": `[1]`}, {"arguments": `{"a": 1}`},
		{"arguments": `{}`, "other": "x"}, {"arguments": `{"a":1.5}`}} {
		if _, err := action.MCPArgumentsOf(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if got := firstText(`{"content":[{"type":"image"},{"type":"text","text":" no such file "}]}`); got != "no such file" {
		t.Errorf("firstText = %q", got)
	}
}
