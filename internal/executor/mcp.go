package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
)

// MCPCaller calls an upstream MCP server's tool (internal/mcp's
// Supervisor): result is the tool's result as JSON (a CallToolResult),
// isError its isError flag. Secrets lists the values injected into the
// server's connection (headers, env), redacted from every result.
type MCPCaller interface {
	CallTool(ctx context.Context, server, tool string, arguments json.RawMessage) (result json.RawMessage, isError bool, err error)
	Secrets(server string) map[string]string
}

// The outputs of an mcp-tool execution.
const (
	// OutputMCPResult is the tool's result, a CallToolResult as JSON
	// (secrets redacted), as the agent gets it.
	OutputMCPResult = "result"
	// OutputMCPIsError is "true" when the tool reported an error.
	OutputMCPIsError = "is_error"
)

// ErrMCPResultTooLarge is a tool result larger than an output may hold:
// the call ran, its result is not recorded, the agent gets a tool error.
var ErrMCPResultTooLarge = errors.New("the tool's result is larger than an execution's output may hold")

// mcpTool calls the registration's upstream tool with the intent's
// arguments (params.arguments, canonical JSON: what the operator saw).
type mcpTool struct {
	reg    action.Registration
	caller MCPCaller
	budget int64
}

var _ implementation = mcpTool{}

func (mcpTool) bind(r action.Registration, e *env) gate.Executor {
	return mcpTool{reg: r, caller: e.mcp, budget: e.sandbox.maxContent}
}

// check refuses an MCP tool with no upstream to call.
func (e mcpTool) check() error {
	if e.caller == nil {
		return errors.New("no MCP upstreams are configured (serve --mcp-config)")
	}
	return nil
}

// Run calls the tool. A tool error is a failed execution whose output
// holds the tool's result; a result too large to record fails with
// ErrMCPResultTooLarge (the tool ran).
func (e mcpTool) Run(ctx context.Context, p *gate.Permit) (map[string]string, error) {
	if err := check(p, e.reg.Type); err != nil {
		return nil, err
	}
	args, err := action.MCPArgumentsOf(p.Intent().Params)
	if err != nil {
		return nil, err
	}
	ref := e.reg.Executor.MCP
	res, isErr, err := e.caller.CallTool(ctx, ref.Server, ref.Tool, args)
	redact, _ := action.Redactor(e.caller.Secrets(ref.Server))
	if err != nil {
		return nil, scrub(err, redact)
	}
	text := redact.Replace(string(res))
	if n := int64(contract.JSONLen(text)); n > e.budget {
		return map[string]string{"result_bytes": strconv.Itoa(len(res))},
			fmt.Errorf("%w (%d bytes JSON-encoded, at most %d)", ErrMCPResultTooLarge, n, e.budget)
	}
	out := map[string]string{OutputMCPResult: text, OutputMCPIsError: strconv.FormatBool(isErr)}
	if isErr {
		return out, fmt.Errorf("tool %s of %s reported an error: %s", ref.Tool, ref.Server, firstText(text))
	}
	return out, nil
}

// firstText is the start of a result's first text content, for the
// execution's error.
func firstText(result string) string {
	var r struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	}
	if json.Unmarshal([]byte(result), &r) != nil {
		return ""
	}
	for _, c := range r.Content {
		if c.Type == "text" {
			t := strings.TrimSpace(c.Text)
			if len(t) > 200 {
				t = contract.TruncateJSON(t, 200)
			}
			return t
		}
	}
	return ""
}
