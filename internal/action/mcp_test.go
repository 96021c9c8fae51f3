package action

import (
	"errors"
	"testing"

	"github.com/exoarmur/exoarmur/internal/contract"
)

// TestMCPToolRegistration: the type names the tool it calls; the policy
// decides only on an intent whose target is that type and whose params
// are exactly the canonical arguments.
func TestMCPToolRegistration(t *testing.T) {
	r, err := MCPToolRegistration("fs", "read_text_file", contract.A0, "reads")
	if err != nil {
		t.Fatal(err)
	}
	if !r.ReadOnly || r.Executor.MCP.Tool != "read_text_file" || r.Type != "mcp.fs.read_text_file" {
		t.Fatalf("%+v", r)
	}
	args := map[string]string{MCPArguments: `{"path":"/a"}`}
	if got, err := r.PolicyTarget(r.Type, args); err != nil || got != r.Type {
		t.Fatalf("PolicyTarget = %q, %v", got, err)
	}
	if _, err := r.PolicyTarget("mcp.fs.write_file", args); !errors.Is(err, ErrRender) {
		t.Fatalf("a target naming another tool: %v", err)
	}
	if _, err := r.PolicyTarget(r.Type, map[string]string{MCPArguments: `{"path": "/a"}`}); !errors.Is(err, ErrRender) {
		t.Fatalf("non-canonical arguments: %v", err)
	}
	bad := r
	bad.Executor.MCP = &MCPRef{Server: "fs", Tool: "write_file"}
	if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a type that is not its tool's: %v", err)
	}
	other := Builtin().List()[0]
	other.Executor.MCP = &MCPRef{Server: "fs", Tool: "x"}
	if err := other.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an MCP ref on another kind: %v", err)
	}
}
