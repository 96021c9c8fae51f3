package action

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"text/template"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// Template is what a declared HTTP action (executor kind HTTPTemplate)
// sends, as data: the method, the URL, header and body templates parsed
// once at load, the compiled JSON Schema of its params, and the secrets
// its headers use. ParseFile builds it; it holds no executor code.
//
// A secret's value is held only in an opaque *Secret, which prints and
// encodes as its placeholder (SecretPlaceholder), never its value.
type Template struct {
	method  string
	url     *template.Template
	headers []header // sorted by name
	body    *template.Template
	// params validates an intent's params; properties are the names it
	// declares (a template may use only these).
	params     *jsonschema.Schema
	properties []string
	required   []string // the schema's top-level required
	// secrets are the secrets the headers may use, by name, in name
	// order; a value is loaded (ParseOptions.Secrets) or nil.
	secrets map[string]*Secret
}

type header struct {
	name string
	tmpl *template.Template
}

// Method is the HTTP method the action sends.
func (t *Template) Method() string { return t.method }

// PolicyType is the action type as the policies see it (policy.Schema):
// its name, effect and declared params, each required if the schema
// requires it.
func (r Registration) PolicyType() policy.ActionType {
	at := policy.ActionType{Name: r.Type, Class: r.Class, Effect: r.Effect}
	if t := r.Executor.Template; t != nil {
		at.Target = r.PolicyTarget
		for _, p := range t.properties {
			at.Params = append(at.Params, policy.Param{Name: p, Required: slices.Contains(t.required, p)})
		}
	}
	if r.Executor.Kind == MCPTool {
		at.Target = r.PolicyTarget
	}
	return at
}

// HasBody reports whether the action sends a body.
func (t *Template) HasBody() bool { return t.body != nil }

// Properties lists the params the action's schema declares, sorted.
func (t *Template) Properties() []string { return slices.Clone(t.properties) }

// SecretNames lists the secrets the action declares, sorted.
func (t *Template) SecretNames() []string {
	names := make([]string, 0, len(t.secrets))
	for n := range t.secrets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Secret returns the loaded secret of that name, or nil when it is not
// declared or was not loaded (a parse without ParseOptions.Secrets).
func (t *Template) Secret(name string) *Secret { return t.secrets[name] }

// Secret is a loaded secret: its value is reachable only through Value;
// it formats (fmt's verbs, %v and %#v included) and encodes as JSON as its
// placeholder, so a log line or record that takes it by mistake still
// holds no secret.
type Secret struct {
	name  string
	value string
}

// SecretPlaceholder is what a secret is shown as: in a rendered request
// shown to operators and given to the policy, and in place of any echo of
// its value in an output.
func SecretPlaceholder(name string) string { return "<secret:" + name + ">" }

// Name is the secret's declared name.
func (s *Secret) Name() string { return s.name }

// Value is the secret's value: for the executor building the request it
// sends, and for redacting its echo from the output. Never log it.
func (s *Secret) Value() string { return s.value }

// String is the placeholder.
func (s *Secret) String() string { return SecretPlaceholder(s.name) }

// GoString is the placeholder.
func (s *Secret) GoString() string { return s.String() }

// Format prints the placeholder whatever the verb.
func (s *Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// MarshalJSON encodes the placeholder.
func (s *Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Rendered is a declared HTTP action's request as it will be sent, with
// each secret shown as its placeholder (SecretPlaceholder) unless it was
// rendered for sending (RenderRequest).
type Rendered struct {
	Method string   `json:"method"`
	URL    string   `json:"url"`
	Header []Header `json:"headers,omitempty"`
	Body   string   `json:"body,omitempty"`
}

// Header is one rendered request header.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ErrRender wraps every reason a declared action's request cannot be
// rendered: params that fail its schema, a template that fails, a URL
// that is not an absolute http(s) URL, a header value with a line break.
var ErrRender = errors.New("cannot render the action's request")

// Render validates params against r's params schema and renders its
// request for target, with the secrets as placeholders: what operators
// are shown and what the policy decides on (the URL). It is pure. A
// registration that is not a declared HTTP action has nothing to render
// (ErrRender).
func (r Registration) Render(target string, params map[string]string) (Rendered, error) {
	return r.render(target, params, false)
}

// RenderRequest is Render with the secrets' values in the headers: only
// for the executor building the request it sends. A secret that was not
// loaded fails (ErrRender).
func (r Registration) RenderRequest(target string, params map[string]string) (Rendered, error) {
	return r.render(target, params, true)
}

// CheckParams validates params against r's params schema (nil for an
// action that declares none). The error names the field and is a
// *contract.Error with CodeInvalid.
func (r Registration) CheckParams(params map[string]string) error {
	t := r.Executor.Template
	if t == nil || t.params == nil {
		return nil
	}
	doc := make(map[string]any, len(params))
	for k, v := range params {
		doc[k] = v
	}
	if err := t.params.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return contract.Errorf(contract.CodeInvalid, "action %s: params %s", r.Type, contract.DescribeValidation(ve, "/params"))
		}
		return contract.Wrap(contract.CodeInvalid, "action "+r.Type+": params do not match its schema", err)
	}
	return nil
}

// PolicyTarget is what the policy decides on for an intent of r: the
// rendered URL of a declared HTTP action (so a host policy or the
// allowlist sees the URL that will be called), else the target.
func (r Registration) PolicyTarget(target string, params map[string]string) (string, error) {
	if r.Executor.Kind == MCPTool {
		return r.mcpTarget(target, params)
	}
	if r.Executor.Kind != HTTPTemplate {
		return target, nil
	}
	// Only the URL: the headers and body are not what the policy sees
	// (the params are still checked against the schema: fail closed).
	t := r.Executor.Template
	if t == nil {
		return "", fmt.Errorf("action %s: %w: not a declared http action", r.Type, ErrRender)
	}
	if err := r.CheckParams(params); err != nil {
		return "", fmt.Errorf("%w: %w", ErrRender, err)
	}
	if params == nil {
		params = map[string]string{}
	}
	return r.renderURL(map[string]any{"target": target, "params": params})
}

// renderURL renders the URL template, which must give an absolute
// http(s) URL without credentials.
func (r Registration) renderURL(data map[string]any) (string, error) {
	u, err := execute(r.Executor.Template.url, data, nil)
	if err != nil {
		return "", fmt.Errorf("action %s: %w: url: %v", r.Type, ErrRender, err)
	}
	if _, _, ok := policy.URLHost(u); !ok {
		return "", fmt.Errorf("action %s: %w: url: %q is not an absolute http(s) URL without credentials", r.Type, ErrRender, u)
	}
	return u, nil
}

func (r Registration) render(target string, params map[string]string, withSecrets bool) (Rendered, error) {
	t := r.Executor.Template
	if t == nil {
		return Rendered{}, fmt.Errorf("action %s: %w: not a declared http action", r.Type, ErrRender)
	}
	if err := r.CheckParams(params); err != nil {
		return Rendered{}, fmt.Errorf("%w: %w", ErrRender, err)
	}
	if params == nil {
		params = map[string]string{}
	}
	data := map[string]any{"target": target, "params": params}
	out := Rendered{Method: t.method}
	var err error
	if out.URL, err = r.renderURL(data); err != nil {
		return Rendered{}, err
	}
	secret := func(name string) (string, error) {
		s, ok := t.secrets[name]
		switch {
		case !ok:
			return "", fmt.Errorf("secret %q is not declared", name)
		case !withSecrets:
			return SecretPlaceholder(name), nil
		case s == nil:
			return "", fmt.Errorf("secret %q is not loaded", name)
		}
		return s.value, nil
	}
	for _, h := range t.headers {
		v, err := execute(h.tmpl, data, secret)
		if err != nil {
			return Rendered{}, fmt.Errorf("action %s: %w: header %s: %v", r.Type, ErrRender, h.name, err)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return Rendered{}, fmt.Errorf("action %s: %w: header %s: the value holds a line break or NUL", r.Type, ErrRender, h.name)
		}
		out.Header = append(out.Header, Header{Name: h.name, Value: v})
	}
	if t.body != nil {
		if out.Body, err = execute(t.body, data, nil); err != nil {
			return Rendered{}, fmt.Errorf("action %s: %w: body: %v", r.Type, ErrRender, err)
		}
	}
	return out, nil
}

// execute runs one template. secret, when set, is the secret function
// (headers only: the other templates were refused at load if they use it).
func execute(t *template.Template, data any, secret func(string) (string, error)) (string, error) {
	if secret != nil {
		var err error
		if t, err = t.Clone(); err != nil {
			return "", err
		}
		t.Funcs(template.FuncMap{"secret": secret})
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return "", cleanExecErr(err)
	}
	return b.String(), nil
}

// cleanExecErr keeps a template execution error short: text/template's
// names the template and position, which is what the operator needs.
func cleanExecErr(err error) error {
	var ee template.ExecError
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// funcs is the restricted FuncMap of a template. secret is a placeholder
// at parse time; execute binds the real one for headers.
var funcs = template.FuncMap{
	"json": func(s string) (string, error) {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // shown to operators as it is sent
		if err := enc.Encode(s); err != nil {
			return "", err
		}
		return strings.TrimSuffix(b.String(), "\n"), nil
	},
	"query":  url.QueryEscape,
	"path":   url.PathEscape,
	"secret": func(string) (string, error) { return "", errors.New("secret is only allowed in headers") },
}
