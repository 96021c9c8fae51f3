package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/santhosh-tekuri/jsonschema/v6"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// ClassOf is the class of an upstream tool: the configuration's mapping
// when it names the tool; else A2, unless the server is trusted, when the
// tool's annotations decide: readOnlyHint → A0, destructiveHint (set
// true) → A3, otherwise A2. An unset destructiveHint counts as not
// destructive here (the protocol's default is true: a tool of a trusted
// server that says nothing is A2, not A3).
func ClassOf(s Server, t *sdk.Tool) string {
	if c, ok := s.Tools[t.Name]; ok {
		return c
	}
	if !s.Trusted || t.Annotations == nil {
		return contract.A2
	}
	switch a := t.Annotations; {
	case a.ReadOnlyHint:
		return contract.A0
	case a.DestructiveHint != nil && *a.DestructiveHint:
		return contract.A3
	}
	return contract.A2
}

// Tool is an upstream tool the gateway offers: its action registration
// and the tool as the upstream listed it (its input schema unchanged).
type Tool struct {
	Registration action.Registration
	Upstream     *sdk.Tool
}

// Registrations turns the tools the supervisor listed into action
// registrations. A tool whose name cannot be an action type, whose
// input schema is not a valid JSON Schema of an object, or whose
// registration does not validate is left out and logged: it never breaks
// the list. A mapping that names a tool the server did not list is
// logged.
func Registrations(s *Supervisor, logger *slog.Logger) []Tool {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var out []Tool
	listed := map[string][]string{}
	count := map[string]int{} // server/tool -> times listed
	for _, lt := range s.Tools() {
		count[lt.Server+"/"+lt.Tool.Name]++
	}
	for _, lt := range s.Tools() {
		srv, _ := s.Server(lt.Server)
		listed[lt.Server] = append(listed[lt.Server], lt.Tool.Name)
		skip := func(why string, err error) {
			logger.Error("mcp upstream tool left out", "server", lt.Server, "tool", lt.Tool.Name, "why", why, "err", err)
		}
		if count[lt.Server+"/"+lt.Tool.Name] > 1 {
			skip("the server lists two tools of this name: which one would run is unknowable", nil)
			continue
		}
		if !toolName.MatchString(lt.Tool.Name) {
			skip("its name cannot be an action type (a lower-case letter or digit then lower-case letters, digits, _ or -, at most 64)", nil)
			continue
		}
		if err := checkInputSchema(lt.Tool.InputSchema); err != nil {
			skip("invalid input schema", err)
			continue
		}
		reg, err := action.MCPToolRegistration(lt.Server, lt.Tool.Name, ClassOf(srv, lt.Tool), lt.Tool.Description)
		if err != nil {
			skip("not a valid action registration", err)
			continue
		}
		out = append(out, Tool{Registration: reg, Upstream: lt.Tool})
	}
	for _, name := range s.order {
		srv, _ := s.Server(name)
		if h := s.Health()[name]; h.State != "up" {
			continue // nothing listed to compare with
		}
		for tn := range srv.Tools {
			if !slices.Contains(listed[name], tn) {
				logger.Warn("mcp config maps a tool the server does not list", "server", name, "tool", tn)
			}
		}
	}
	return out
}

// noRemote refuses every remote reference of an input schema.
type noRemote struct{}

func (noRemote) Load(url string) (any, error) {
	return nil, fmt.Errorf("%s: an input schema may not reference another document", url)
}

// checkInputSchema accepts a JSON Schema (draft 2020-12 unless it says
// otherwise) of type object, self-contained.
func checkInputSchema(schema any) error {
	raw, err := json.Marshal(schema)
	if err != nil {
		return err
	}
	var top map[string]any
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return errors.New("not a JSON object")
	}
	if top["type"] != "object" {
		return errors.New(`its type must be "object"`)
	}
	doc, err := jsonschema.UnmarshalJSON(bytesReader(raw))
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noRemote{})
	const url = "urn:exoarmur:mcp:input"
	if err := c.AddResource(url, doc); err != nil {
		return err
	}
	_, err = c.Compile(url)
	return err
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// MappedRegistrations are the action registrations of the tools the
// configuration maps to a class, without connecting to any server: what
// a replay outside the server re-decides MCP calls with (replay
// --mcp-config). A tool the mapping does not name got its class from the
// server's list when the gateway ran, which a replay cannot see.
func (c *Config) MappedRegistrations() ([]action.Registration, error) {
	var out []action.Registration
	for _, s := range c.Servers {
		for _, tool := range slices.Sorted(maps.Keys(s.Tools)) {
			reg, err := action.MCPToolRegistration(s.Name, tool, s.Tools[tool], "")
			if err != nil {
				return nil, fmt.Errorf("servers.%s.tools.%s: %w", s.Name, tool, err)
			}
			out = append(out, reg)
		}
	}
	return out, nil
}
