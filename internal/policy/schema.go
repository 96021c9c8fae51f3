package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// The cedar schema of what ExoArmur gives its policies, and the validation
// of a bundle against it: a policy that names an attribute the context
// does not have, or an entity type or action that does not exist, would
// make every request it is evaluated on fail (and so deny everything, or
// permit nothing) without a word; validation names it, with its file and
// line, before the bundle is used.
//
// The validator is cedar-go's (x/exp/schema/validate), the one that comes
// with the engine ExoArmur evaluates with: the same parser, the same types.

// ActionType is an action type as the policies see it: its name (the cedar
// action's id) and its effect (the resource and context it is decided on).
// internal/action's registrations give them.
type ActionType struct {
	Name   string
	Class  string // context.class (contract.A0 .. A3)
	Effect Effect
	// Params are the params a declared action takes (its effect
	// WithParams): each a String in context.params and a Long in
	// context.sizes, optional unless Required.
	Params []Param
	// Target, when set, is what the policy decides on instead of the
	// request's target (a declared action's rendered URL, its params
	// checked): the gate's own function, so a policy test decides as the
	// gate does. An error denies.
	Target func(target string, params map[string]string) (string, error)
}

// Param is one param of a declared action type.
type Param struct {
	Name     string
	Required bool
}

// MCPAnyTool is the action the schema declares on Tool resources when it
// is given no MCP tool (Schema).
const MCPAnyTool = "mcp.any.tool"

// Operations are the API operations the operation policies decide
// (Authorize), sorted.
func Operations() []string {
	ops := []string{OpPropose, OpExecute, OpReadIntent, OpReadTenantIntents, OpReadAudit, OpReadTenantAudit, OpApprove,
		OpReadApprovals, OpReadTenantSwitch, OpFlipTenantSwitch, OpReadGlobalSwitch, OpFlipGlobalSwitch, OpManageKeys,
		OpKeyManagement, OpReadMetrics, OpResolve, OpActivatePolicy, OpActivateGlobalPolicy}
	slices.Sort(ops)
	return ops
}

// contextOf is each effect's context record, as cedar schema text: the
// attributes fsContext and httpContext build.
var contextOf = map[string]string{
	effectFS:   `class: String, role: String, effect: String, path_local: Bool`,
	effectHTTP: `class: String, role: String, effect: String, scheme_ok: Bool, host: String, host_port: String, allowlist: Set<String>`,
	effectMCP:  `class: String, role: String, effect: String, server: String, tool: String`,
}

// timeContext is context.time of an effect WithParams.
const timeContext = `time: { weekday: String, hour: Long, minute: Long, date: String }`

// paramsContext is context.params and context.sizes of an effect
// WithParams, for its params.
func paramsContext(params []Param) string {
	var ps, sizes []string
	for _, p := range params {
		opt := "?"
		if p.Required {
			opt = ""
		}
		ps = append(ps, fmt.Sprintf("%q%s: String", p.Name, opt))
		sizes = append(sizes, fmt.Sprintf("%q%s: Long", p.Name, opt))
	}
	return "params: { " + strings.Join(ps, ", ") + " }, sizes: { " + strings.Join(sizes, ", ") + " }"
}

// operationContext is Authorize's context record.
const operationContext = `{ role: String, tenant: String, granted: Set<String> }`

// Schema returns the cedar schema (human-readable form) of the entities,
// actions and contexts ExoArmur provides: one cedar action per action type
// (resource by its effect: File or Url) and per API operation (resource
// Tenant or System), the principal always a Principal.
func Schema(actions []ActionType) ([]byte, error) {
	var b strings.Builder
	b.WriteString("// What ExoArmur gives its cedar policies (exoarmur policy schema).\n")
	b.WriteString("// Action policies (@scope(\"action\")): principal Principal, resource File (fs), Url (http) or Tool (mcp).\n")
	b.WriteString("// Operation policies (@scope(\"operation\")): resource Tenant, or System for global powers.\n")
	for _, e := range []string{"Principal", "File", "Url", "Tool", "Tenant", "System"} {
		fmt.Fprintf(&b, "entity %s;\n", e)
	}
	sorted := slices.Clone(actions)
	slices.SortFunc(sorted, func(a, b ActionType) int { return strings.Compare(a.Name, b.Name) })
	for _, a := range sorted {
		ctx, ok := contextOf[a.Effect.name]
		if !ok {
			return nil, fmt.Errorf("policy schema: action type %s has no known effect", a.Name)
		}
		if a.Effect.params {
			ctx += ", " + paramsContext(a.Params) + ", " + timeContext
		}
		fmt.Fprintf(&b, "action %q appliesTo { principal: Principal, resource: %s, context: { %s } };\n", a.Name, a.Effect.resource, ctx)
	}
	// The MCP tools are known only once serve lists its upstreams: a
	// schema without one still declares an action on Tool resources
	// (MCPAnyTool), so a policy about tools validates before they are.
	if !slices.ContainsFunc(sorted, func(a ActionType) bool { return a.Effect.name == effectMCP }) {
		fmt.Fprintf(&b, "action %q appliesTo { principal: Principal, resource: Tool, context: { %s } };\n", MCPAnyTool, contextOf[effectMCP])
	}
	for _, op := range Operations() {
		fmt.Fprintf(&b, "action %q appliesTo { principal: Principal, resource: [Tenant, System], context: %s };\n", op, operationContext)
	}
	return []byte(b.String()), nil
}

// SchemaJSON returns the same schema in cedar's JSON schema form.
func SchemaJSON(actions []ActionType) ([]byte, error) {
	src, err := Schema(actions)
	if err != nil {
		return nil, err
	}
	var s schema.Schema
	if err := s.UnmarshalCedar(src); err != nil {
		return nil, fmt.Errorf("policy schema: %w", err)
	}
	return s.MarshalJSON()
}

// Problem is one thing wrong with a policy file: where, which policy ("" when
// the file does not parse), and what.
type Problem struct {
	File     string
	Line     int
	Column   int
	PolicyID string
	Message  string
}

func (p Problem) String() string {
	where := p.File
	if p.Line > 0 {
		where = fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
	}
	if p.PolicyID != "" {
		return fmt.Sprintf("%s: policy %s: %s", where, p.PolicyID, p.Message)
	}
	return where + ": " + p.Message
}

// Validator checks policy files against ExoArmur's schema.
type Validator struct {
	v *validate.Validator
}

// NewValidator returns the validator of the schema of actions.
func NewValidator(actions []ActionType) (*Validator, error) {
	src, err := Schema(actions)
	if err != nil {
		return nil, err
	}
	var s schema.Schema
	s.SetFilename("exoarmur.cedarschema")
	if err := s.UnmarshalCedar(src); err != nil {
		return nil, fmt.Errorf("policy schema: %w", err)
	}
	res, err := s.Resolve()
	if err != nil {
		return nil, fmt.Errorf("policy schema: %w", err)
	}
	return &Validator{v: validate.New(res)}, nil
}

// File validates one policy file: it must parse, every policy must carry a
// unique @id (its reason code) and a @scope of "action" or "operation" if
// any, and every policy must type-check against the schema (strict mode).
// seen carries the @ids met in earlier files of the same bundle.
func (v *Validator) File(name string, src []byte, seen map[string]string) []Problem {
	list, err := cedar.NewPolicyListFromBytes(name, src)
	if err != nil {
		return []Problem{{File: name, Message: err.Error()}}
	}
	var out []Problem
	for i, p := range list {
		pos := p.Position()
		prob := func(id, format string, args ...any) {
			out = append(out, Problem{File: name, Line: pos.Line, Column: pos.Column, PolicyID: id, Message: fmt.Sprintf(format, args...)})
		}
		id := string(p.Annotations()["id"])
		switch {
		case id == "":
			prob("", "policy %d has no @id annotation (its reason code)", i+1)
			continue
		case seen[id] != "":
			prob(id, "duplicate @id (also in %s)", seen[id])
		}
		if seen != nil {
			seen[id] = fmt.Sprintf("%s:%d", name, pos.Line)
		}
		if scope := p.Annotations()["scope"]; scope != "" && scope != "action" && scope != "operation" {
			prob(id, "@scope must be \"action\" or \"operation\", not %q", string(scope))
		}
		// cedar's public ast.Policy is defined as the x/exp one.
		if err := v.v.Policy(id, (*xast.Policy)(p.AST())); err != nil {
			for _, e := range unjoin(err) {
				prob(id, "%v", e)
			}
		}
	}
	// The validator's messages come in map order: sort them.
	slices.SortStableFunc(out, func(a, b Problem) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return strings.Compare(a.Message, b.Message)
	})
	return out
}

// unjoin splits a joined error into its parts.
func unjoin(err error) []error {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		return j.Unwrap()
	}
	return []error{err}
}
