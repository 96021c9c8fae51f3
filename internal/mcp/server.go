package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/exoarmur/exoarmur/internal/access"
	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/auth"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/gate"
	"github.com/exoarmur/exoarmur/internal/policy"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// The MCP front end. internal/api's guard has authenticated the caller
// and authorized it to propose in the tenant (internal/access) before
// ServeMCP runs; each request is served statelessly by a go-sdk server
// holding the tools the principal may use (its tenant and action grants:
// auth.Principal.MayUse), each with its upstream's input schema
// unchanged. tools/call is gate.Propose then gate.Execute (authorized by
// the access layer as REST's execute is); an unknown tool, or one the
// principal may not use, is the SDK's -32602.
//
// # Idempotency keys
//
// A call of an A0 tool runs each time: its key is "mcp-" and a fresh
// random ID (Frontend.NewID), unless the tenant's approval rules require
// approval for A0 (then it is keyed as the other classes are). Any other call's key is derived from the
// principal, the tool and the canonical arguments ("mcp-" and the
// base64url SHA-256 of them), so the first call proposes the intent and
// answers that approval is pending; the same call repeated once an
// operator approved it runs, exactly once; later repeats answer the
// recorded outcome; after a denial, denied.

// Gate is what the front end needs of the gate.
type Gate interface {
	Propose(ctx context.Context, t tenant.ID, p *auth.Principal, req contract.IntentRequest, meta gate.Meta) (gate.View, bool, error)
	Execute(ctx context.Context, t tenant.ID, p *auth.Principal, intentID string, meta gate.Meta) (gate.Outcome, error)
}

// Authorizer is the access layer's operation check.
type Authorizer interface {
	Authorize(ctx context.Context, req access.Request) error
}

// ApprovalRules says how many approvals a class needs in a tenant
// (approval.Store).
type ApprovalRules interface {
	Required(t tenant.ID, class string) int
}

// Frontend serves MCP for the tools of the upstreams.
type Frontend struct {
	Gate   Gate
	Access Authorizer
	// Approvals, when set, is asked whether an A0 call needs approval in
	// the tenant (the approval rules may require it): such a call gets a
	// derived key like the other classes, so that it can run once
	// approved.
	Approvals ApprovalRules
	Tools     []Tool
	// NewID returns a fresh random ID ([A-Za-z0-9_-], at most 100 bytes):
	// the idempotency keys of A0 calls.
	NewID  func() string
	Logger *slog.Logger
}

// ServeMCP serves one Streamable HTTP request (stateless, JSON answers).
func (f *Frontend) ServeMCP(w http.ResponseWriter, r *http.Request, p *auth.Principal, t tenant.ID, meta access.Meta) {
	srv := sdk.NewServer(&sdk.Implementation{Name: "exoarmur", Version: "1"}, &sdk.ServerOptions{Logger: f.Logger,
		Instructions: "Every tool call passes ExoArmur's gate: a call that needs approval answers that it is pending; call it again, the same way, once an operator approved it."})
	for _, tool := range f.Tools {
		reg := tool.Registration
		if !p.HasTenant(t.String()) || !p.MayUse(reg.Type, reg.Class) {
			continue
		}
		up := *tool.Upstream
		up.Name = reg.Type
		up.Meta = nil
		srv.AddTool(&up, func(ctx context.Context, req *sdk.CallToolRequest) (*sdk.CallToolResult, error) {
			return f.call(ctx, reg, p, t, meta, req.Params.Arguments), nil
		})
	}
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{Stateless: true, JSONResponse: true, Logger: f.Logger})
	h.ServeHTTP(w, r)
}

// toolError is a tool result with isError set and one text.
func toolError(format string, args ...any) *sdk.CallToolResult {
	return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

// IdempotencyKey is the key of a call that needs approval: derived from
// the principal, the tool's action type and the canonical arguments.
func IdempotencyKey(principal, actionType string, canonicalArgs []byte) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(principal), []byte(actionType), canonicalArgs} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return contract.MCPKeyPrefix + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func (f *Frontend) call(ctx context.Context, reg action.Registration, p *auth.Principal, t tenant.ID, meta access.Meta, raw json.RawMessage) *sdk.CallToolResult {
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage("{}")
	}
	args, err := contract.CanonicalizeJSON(raw)
	if err != nil {
		return toolError("the arguments are not accepted: %v (numbers must be integers)", err)
	}
	if !strings.HasPrefix(string(args), "{") {
		return toolError("the arguments must be a JSON object")
	}
	if len(args) > maxArguments {
		return toolError("the arguments take %d bytes; at most %d are accepted", len(args), maxArguments)
	}
	// The execute is authorized as REST's is (the guard authorized the
	// proposal): no front end decides access itself.
	if err := f.Access.Authorize(ctx, access.Request{Principal: p, Operation: policy.OpExecute, Tenant: t, Meta: meta}); err != nil {
		return toolError("refused: %v", err)
	}
	key := IdempotencyKey(p.ID, reg.Type, args)
	if reg.Class == contract.A0 && (f.Approvals == nil || f.Approvals.Required(t, contract.A0) == 0) {
		key = contract.MCPKeyPrefix + f.NewID()
	}
	gm := gate.Meta{RequestID: meta.RequestID}
	v, _, err := f.Gate.Propose(ctx, t, p, contract.IntentRequest{Action: reg.Type, Target: reg.Type,
		Params: map[string]string{action.MCPArguments: string(args)}, IdempotencyKey: key}, gm)
	if err != nil {
		return toolError("refused by the gateway: %v", err)
	}
	id := v.Intent.ID
	out, err := f.Gate.Execute(ctx, t, p, id, gm)
	if err != nil {
		return f.refused(id, err)
	}
	return resultOf(id, out.Result)
}

// maxArguments is the V1 bound of a param.
const maxArguments = 262144

func (f *Frontend) refused(id string, err error) *sdk.CallToolResult {
	var ce *contract.Error
	if !errors.As(err, &ce) {
		return toolError("intent %s: the gateway could not run the call: %v", id, err)
	}
	switch {
	case ce.Code == contract.CodeBlocked && slices.Contains(ce.Reasons, gate.ReasonApprovalDenied):
		return toolError("denied: an operator denied intent %s; this call will not run", id)
	case ce.Code == contract.CodeBlocked && len(ce.Reasons) == 1 && ce.Reasons[0] == gate.ReasonApprovalRequired:
		return toolError("approval pending: intent %s needs an operator's approval. Once it is approved, make the same call again (same tool, same arguments): it will run then, once.", id)
	case ce.Code == contract.CodeBlocked:
		return toolError("blocked by the gate (intent %s): %s", id, strings.Join(ce.Reasons, ", "))
	case ce.Code == contract.CodeInDoubt:
		return toolError("intent %s: in doubt: %s", id, ce.Message)
	}
	return toolError("intent %s: %s: %s", id, ce.Code, ce.Message)
}

// resultOf is the agent's answer for a recorded execution: the tool's
// result as the upstream sent it, else a tool error saying what happened.
func resultOf(id string, res contract.ExecutionResult) *sdk.CallToolResult {
	if raw, ok := res.Output["result"]; ok {
		var r sdk.CallToolResult
		if err := json.Unmarshal([]byte(raw), &r); err == nil {
			return &r
		}
	}
	switch res.Status {
	case contract.StatusSucceeded:
		return toolError("intent %s: succeeded, but its result could not be read back", id)
	case contract.StatusFailed:
		return toolError("intent %s: the tool call failed: %s", id, res.Error)
	}
	return toolError("intent %s: %s: %s", id, res.Status, res.Error)
}
