package action

// MCP tools (issue 18): each tool of an upstream MCP server that
// internal/mcp connects to is one action type, mcp.<server>.<tool>, of
// executor kind MCPTool. Its registration is built here (MCPToolRegistration),
// like every other, so the gate, the grants, the policy, approvals,
// idempotency, the audit and replay treat a tool call as any action.
//
// An intent of an MCP tool names the tool as its target (its action type,
// exactly) and carries the tool's arguments as one param, MCPArguments:
// their canonical JSON (contract.CanonicalizeJSON), an object. What the
// operator approves is byte for byte what the executor sends.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// MCPTool calls one tool of an upstream MCP server (internal/mcp) with the
// intent's MCPArguments param.
const MCPTool ExecutorKind = "mcp-tool"

// MCPArguments is the param of an MCP tool intent that holds the tool's
// arguments: their canonical JSON, an object.
const MCPArguments = "arguments"

// MCPPrefix starts every MCP tool's action type.
const MCPPrefix = "mcp."

// MCPRef names the upstream tool an MCPTool registration calls.
type MCPRef struct {
	Server string
	Tool   string
}

// MCPToolType is the action type of an upstream tool: mcp.<server>.<tool>.
func MCPToolType(server, tool string) string { return MCPPrefix + server + "." + tool }

// MCPToolRegistration returns the registration of an upstream MCP tool:
// class A0 is read-only (the operator's mapping or a trusted server's
// readOnlyHint says so; the gateway cannot see inside the upstream).
// The registration is validated (ErrInvalid).
func MCPToolRegistration(server, tool, class, description string) (Registration, error) {
	if description = strings.TrimSpace(description); description == "" {
		description = "tool " + tool + " of the MCP server " + server
	}
	if len(description) > 1024 {
		description = description[:1024]
		for !json.Valid([]byte(`"`+description+`"`)) && len(description) > 0 { // never cut inside a character
			description = description[:len(description)-1]
		}
	}
	r := Registration{
		Type:        MCPToolType(server, tool),
		Class:       class,
		ReadOnly:    class == contract.A0,
		Description: "MCP tool " + server + "/" + tool + ": " + description + " (target: the action type; params.arguments: the tool's arguments as canonical JSON)",
		Effect:      policy.Tool,
		Executor:    Executor{Kind: MCPTool, MCP: &MCPRef{Server: server, Tool: tool}},
	}
	if err := r.Validate(); err != nil {
		return Registration{}, err
	}
	return r, nil
}

// checkMCP is Validate's part for an MCPTool registration.
func (r Registration) checkMCP() error {
	ref := r.Executor.MCP
	switch {
	case r.Executor.Kind != MCPTool && ref != nil:
		return fmt.Errorf("executor kind %s takes no MCP tool", r.Executor.Kind)
	case r.Executor.Kind != MCPTool:
		return nil
	case ref == nil || ref.Server == "" || ref.Tool == "":
		return errors.New("executor kind mcp-tool needs the server and tool it calls")
	case r.Type != MCPToolType(ref.Server, ref.Tool):
		return fmt.Errorf("an MCP tool's type is %s", MCPToolType(ref.Server, ref.Tool))
	}
	return nil
}

// mcpTarget is PolicyTarget for an MCPTool registration: the target must
// be the action type, and the params exactly MCPArguments holding a
// canonical JSON object; anything else is refused (the policy denies).
func (r Registration) mcpTarget(target string, params map[string]string) (string, error) {
	if target != r.Type {
		return "", fmt.Errorf("%w: the target of an MCP tool call must be its action type %s", ErrRender, r.Type)
	}
	if _, err := MCPArgumentsOf(params); err != nil {
		return "", fmt.Errorf("%w: %v", ErrRender, err)
	}
	return target, nil
}

// MCPArgumentsOf returns the arguments an MCP tool intent carries: its
// MCPArguments param, which must be its only param and the canonical JSON
// of an object.
func MCPArgumentsOf(params map[string]string) (json.RawMessage, error) {
	if len(params) != 1 {
		return nil, fmt.Errorf("params must be exactly %q (got %v)", MCPArguments, slices.Sorted(maps.Keys(params)))
	}
	raw, ok := params[MCPArguments]
	if !ok {
		return nil, fmt.Errorf("params must be exactly %q", MCPArguments)
	}
	canon, err := contract.CanonicalizeJSON([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("params.%s: not JSON: %v", MCPArguments, err)
	}
	if string(canon) != raw {
		return nil, fmt.Errorf("params.%s: not canonical JSON", MCPArguments)
	}
	if !strings.HasPrefix(raw, "{") {
		return nil, fmt.Errorf("params.%s: the arguments must be an object", MCPArguments)
	}
	return json.RawMessage(raw), nil
}

// LoadEnvSecret loads the secret held by the environment variable name
// (as an actions file's env secret is loaded: not empty, at least
// MinSecretBytes, no control character); errors name the variable, never
// the value. internal/mcp's header and environment secrets use it.
func LoadEnvSecret(src SecretSource, name string) (*Secret, error) {
	if err := CheckSecretName(name); err != nil {
		return nil, err
	}
	v, err := loadSecret(src, fileSecret{Env: name})
	if err != nil {
		return nil, err
	}
	return &Secret{name: name, value: v}, nil
}

// CheckSecretName refuses a name no secret may have.
func CheckSecretName(name string) error {
	if !secretName.MatchString(name) {
		return errors.New("a secret's name is a letter or _ then letters, digits or _ (at most 64)")
	}
	return nil
}
