package action

// The actions file (serve --actions-file, check-config --actions-file,
// replay and audit verify --actions-file): the operator's own action
// types, each a registration of executor kind HTTPTemplate. docs/ACTIONS.md
// documents the format.
//
// # Decoding
//
// The file is YAML or JSON. sigs.k8s.io/yaml (YAMLToJSONStrict) turns
// YAML into JSON, refusing duplicate keys (a JSON file is YAML too, so it
// takes the same path); the JSON is then decoded strictly by
// encoding/json with DisallowUnknownFields into the file's Go shape. So a
// misspelt field ("hedaers") is an error naming it, not a setting
// silently ignored, and there is one decoder and one set of struct tags
// whatever the file's syntax: YAML's own decoders would each need their
// own strictness and tags, and would turn "yes" or 1.0 into values the
// JSON shape does not have.
//
// # Checks at load
//
// Everything that can be checked before a request is: the name (an
// action name of the intent contracts, contract.CheckActionName: a V1
// name, ^[a-z]+\.[a-z]+$, or a wider v2 one such as tickets.create_v2;
// not a built-in), the class, the
// method (class A0 needs GET), the params JSON Schema (draft 2020-12,
// compiled; an object of strings; no remote references), every template
// (parsed once; only {{.target}}, {{.params.NAME}} of a declared
// property, and the functions json, query, path and, in headers only,
// secret "NAME" of a declared secret), the header names, and the secrets
// (each from exactly one of env or file; loaded when ParseOptions.Secrets
// is set, and then a missing or unusable one is refused by NAME, never
// showing its value).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/policy"
)

// HTTPTemplate sends the request its registration's Template renders:
// method, URL, headers (with secrets injected by the executor) and body
// filled from the validated params; the final URL's host must be on the
// allowlist. Declared actions (ParseFile) run on it.
const HTTPTemplate ExecutorKind = "http-template"

// MaxFileBytes bounds an actions file.
const MaxFileBytes = 1 << 20

// SecretSource is where the secrets an actions file names are read:
// environment variables and files. OSSecrets reads the process's; tests
// inject their own.
type SecretSource interface {
	LookupEnv(name string) (string, bool)
	ReadFile(path string) ([]byte, error)
}

// OSSecrets reads secrets from the process environment and the file
// system.
type OSSecrets struct{}

// LookupEnv is os.LookupEnv.
func (OSSecrets) LookupEnv(name string) (string, bool) { return os.LookupEnv(name) }

// ReadFile is os.ReadFile.
func (OSSecrets) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

// ParseOptions configure ParseFile.
type ParseOptions struct {
	// Secrets, when set, loads every declared secret (serve, check-config);
	// nil leaves them unloaded: enough to decide and replay, not to run.
	Secrets SecretSource
}

// MinSecretBytes is the shortest secret value accepted: a shorter one
// could not be redacted from outputs without mangling them.
const MinSecretBytes = 8

// file is the shape of an actions file.
type file struct {
	Actions map[string]fileAction `json:"actions"`
}

type fileAction struct {
	Class       string                `json:"class"`
	Description string                `json:"description"`
	Params      json.RawMessage       `json:"params"`
	HTTP        *fileHTTP             `json:"http"`
	Secrets     map[string]fileSecret `json:"secrets"`
}

type fileHTTP struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    *string           `json:"body"`
}

type fileSecret struct {
	Env  string `json:"env"`
	File string `json:"file"`
}

// templateMethods are the methods a declared action may send, and
// whether each only reads.
var templateMethods = map[string]bool{
	http.MethodGet: true, http.MethodPost: false, http.MethodPut: false, http.MethodPatch: false, http.MethodDelete: false,
}

var (
	secretName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	paramName  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`) // the V1 intent contract's propertyNames
	// forbiddenHeaders are set by the HTTP client from the request itself.
	forbiddenHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Te", "Trailer", "Upgrade"}
)

// DecodeConfig decodes a configuration file (an actions file, an MCP
// configuration: YAML or JSON, at most max bytes) strictly into v: YAML
// becomes JSON (sigs.k8s.io/yaml, refusing duplicate keys), then no
// unknown field and nothing after the document.
func DecodeConfig(data []byte, max int, v any) error {
	if len(data) > max {
		return fmt.Errorf("larger than %d bytes", max)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("not valid YAML or JSON: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the document")
	}
	return nil
}

// ParseFile parses and checks the actions file name holds (data), and
// returns its registrations sorted by type. Every error names the file,
// the action and the field, and wraps ErrInvalid.
func ParseFile(name string, data []byte, opt ParseOptions) ([]Registration, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("actions file %s: %w: %s", name, ErrInvalid, fmt.Sprintf(format, args...))
	}
	var f file
	if err := DecodeConfig(data, MaxFileBytes, &f); err != nil {
		return nil, fail("%v", err)
	}
	if len(f.Actions) == 0 {
		return nil, fail("actions: at least one action is required")
	}
	regs := make([]Registration, 0, len(f.Actions))
	for _, typ := range slices.Sorted(maps.Keys(f.Actions)) {
		reg, err := parseAction(typ, f.Actions[typ], opt)
		if err != nil {
			return nil, fmt.Errorf("actions file %s: action %q: %w", name, typ, err)
		}
		regs = append(regs, reg)
	}
	return regs, nil
}

// ParseRegistry is ParseFile's registrations after the built-ins, as one
// registry.
func ParseRegistry(name string, data []byte, opt ParseOptions) (*Registry, error) {
	regs, err := ParseFile(name, data, opt)
	if err != nil {
		return nil, err
	}
	r, err := New(append(Builtin().List(), regs...)...)
	if err != nil {
		return nil, fmt.Errorf("actions file %s: %w", name, err)
	}
	return r, nil
}

// LoadFile reads and parses an actions file into a registry of the
// built-ins and its actions; "" is the built-ins alone.
func LoadFile(path string, opt ParseOptions) (*Registry, error) {
	if path == "" {
		return Builtin(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("actions file: %w", err)
	}
	return ParseRegistry(path, data, opt)
}

func parseAction(typ string, a fileAction, opt ParseOptions) (Registration, error) {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
	}
	switch {
	case contract.CheckActionName(typ) != nil:
		return Registration{}, bad("name", "must be two or more dot-separated segments of lower-case letters, digits, _ and -, each starting with a letter or digit (^[a-z0-9][a-z0-9_-]*(\\.[a-z0-9][a-z0-9_-]*)+$, 3..128 bytes): %v", contract.CheckActionName(typ))
	case isBuiltin(typ):
		return Registration{}, bad("name", "%s is a built-in action type", typ)
	case !contract.ValidClass(a.Class):
		return Registration{}, bad("class", "%q is not one of A0, A1, A2, A3", a.Class)
	case strings.TrimSpace(a.Description) == "":
		return Registration{}, bad("description", "required: it is shown to agents and operators")
	case len(a.Description) > 1024:
		return Registration{}, bad("description", "at most 1024 bytes")
	case a.HTTP == nil:
		return Registration{}, bad("http", "required: the request the action sends")
	}
	h := a.HTTP
	readOnly, ok := templateMethods[h.Method]
	switch {
	case !ok:
		return Registration{}, bad("http.method", "%q is not one of GET, POST, PUT, PATCH, DELETE", h.Method)
	case a.Class == contract.A0 && !readOnly:
		return Registration{}, bad("http.method", "class A0 (observe) needs a read-only method (GET), not %s", h.Method)
	case h.URL == "":
		return Registration{}, bad("http.url", "required")
	case h.Body != nil && h.Method == http.MethodGet:
		return Registration{}, bad("http.body", "a GET sends no body")
	}
	t := &Template{method: h.Method, secrets: map[string]*Secret{}}

	// The params schema.
	var err error
	if t.params, t.properties, t.required, err = compileParams(typ, a.Params); err != nil {
		return Registration{}, bad("params", "%v", err)
	}

	// The secrets (declared before the templates that use them).
	for _, sn := range slices.Sorted(maps.Keys(a.Secrets)) {
		s := a.Secrets[sn]
		field := "secrets." + sn
		switch {
		case !secretName.MatchString(sn):
			return Registration{}, bad(field, "a secret's name is a letter or _ then letters, digits or _ (at most 64)")
		case (s.Env == "") == (s.File == ""):
			return Registration{}, bad(field, "give exactly one of env or file")
		}
		t.secrets[sn] = nil
		if opt.Secrets == nil {
			continue
		}
		v, err := loadSecret(opt.Secrets, s)
		if err != nil {
			return Registration{}, bad(field, "%v", err)
		}
		t.secrets[sn] = &Secret{name: sn, value: v}
	}

	// The templates.
	chk := &tmplCheck{properties: t.properties, secrets: t.secrets}
	if t.url, err = parseTemplate("url", h.URL, chk, false); err != nil {
		return Registration{}, bad("http.url", "%v", err)
	}
	for _, hn := range slices.Sorted(maps.Keys(h.Headers)) {
		field := "http.headers." + hn
		if !ValidHeaderName(hn) {
			return Registration{}, bad(field, "not a valid header name")
		}
		canon := textproto.CanonicalMIMEHeaderKey(hn)
		if slices.Contains(forbiddenHeaders, canon) {
			return Registration{}, bad(field, "%s is set by the HTTP client", canon)
		}
		if slices.ContainsFunc(t.headers, func(x header) bool { return x.name == canon }) {
			return Registration{}, bad(field, "declared twice (header names are case-insensitive)")
		}
		ht, err := parseTemplate(field, h.Headers[hn], chk, true)
		if err != nil {
			return Registration{}, bad(field, "%v", err)
		}
		t.headers = append(t.headers, header{name: canon, tmpl: ht})
	}
	slices.SortFunc(t.headers, func(x, y header) int { return strings.Compare(x.name, y.name) })
	if h.Body != nil {
		if t.body, err = parseTemplate("body", *h.Body, chk, false); err != nil {
			return Registration{}, bad("http.body", "%v", err)
		}
	}
	for _, sn := range t.SecretNames() {
		if !chk.used[sn] {
			return Registration{}, bad("secrets."+sn, "declared but no header uses it")
		}
	}
	reg := Registration{Type: typ, Class: a.Class, ReadOnly: readOnly, Description: a.Description, Effect: policy.HTTP.WithParams(),
		Executor: Executor{Kind: HTTPTemplate, Method: h.Method, Template: t}}
	if err := reg.Validate(); err != nil {
		return Registration{}, err
	}
	return reg, nil
}

func isBuiltin(typ string) bool {
	_, ok := Builtin().Lookup(typ)
	return ok
}

func loadSecret(src SecretSource, s fileSecret) (string, error) {
	var v string
	if s.Env != "" {
		ev, ok := src.LookupEnv(s.Env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", s.Env)
		}
		v = ev
	} else {
		b, err := src.ReadFile(s.File)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is named once, below; the error holds nothing of the content
			}
			return "", fmt.Errorf("file %s: %v", s.File, err)
		}
		v = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	from := "environment variable " + s.Env
	if s.File != "" {
		from = "file " + s.File
	}
	switch {
	case v == "":
		return "", fmt.Errorf("%s is empty", from)
	case len(v) < MinSecretBytes:
		return "", fmt.Errorf("%s: the value is shorter than %d bytes", from, MinSecretBytes)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return "", fmt.Errorf("%s: the value holds a control character or line break", from)
	}
	return v, nil
}

// noLoader refuses every remote or file reference of a params schema:
// a schema is self-contained (the draft meta-schemas are built in).
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("%s: a params schema may not reference another document", url)
}

// compileParams compiles a params JSON Schema (draft 2020-12 unless it
// says otherwise): an object whose declared properties are strings with
// V1 parameter names. It returns the schema and the property names.
func compileParams(typ string, raw json.RawMessage) (*jsonschema.Schema, []string, []string, error) {
	s, props, err := compileSchema(typ, raw)
	if err != nil {
		return nil, nil, nil, err
	}
	var top struct {
		Required []string `json:"required"`
	}
	_ = json.Unmarshal(raw, &top) // compiled: required, if present, is an array of strings
	return s, props, top.Required, nil
}

func compileSchema(typ string, raw json.RawMessage) (*jsonschema.Schema, []string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, errors.New("required: a JSON Schema of the intent's params (type: object)")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, err
	}
	obj, ok := doc.(map[string]any)
	if !ok || obj["type"] != "object" {
		return nil, nil, errors.New(`must be a schema of type "object" (an intent's params are an object of strings)`)
	}
	var props []string
	if p, ok := obj["properties"]; ok {
		pm, ok := p.(map[string]any)
		if !ok {
			return nil, nil, errors.New("properties: must be an object")
		}
		for _, pn := range slices.Sorted(maps.Keys(pm)) {
			if !paramName.MatchString(pn) {
				return nil, nil, fmt.Errorf("properties.%s: a param name is a lower-case letter then lower-case letters, digits or _ (at most 64), as the V1 intent contract requires", pn)
			}
			if ps, ok := pm[pn].(map[string]any); ok {
				if ty, has := ps["type"]; has && ty != "string" {
					return nil, nil, fmt.Errorf("properties.%s: type must be \"string\" (an intent's params are strings)", pn)
				}
			}
			props = append(props, pn)
		}
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})
	url := "urn:exoarmur:actions:" + typ + ":params"
	if err := c.AddResource(url, doc); err != nil {
		return nil, nil, err
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, nil, fmt.Errorf("not a valid JSON Schema: %v", err)
	}
	return s, props, nil
}

// ValidHeaderName reports whether s is an HTTP header field name (an
// RFC 9110 token): for the headers an actions file or an MCP
// configuration sends.
func ValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > unicode.MaxASCII || !(r == '-' || r == '_' || r == '.' || r == '!' || r == '#' || r == '$' || r == '%' || r == '&' || r == '\'' ||
			r == '*' || r == '+' || r == '^' || r == '`' || r == '|' || r == '~' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return false
		}
	}
	return true
}

// tmplCheck is what a template may refer to, and which secrets the
// headers used.
type tmplCheck struct {
	properties []string
	secrets    map[string]*Secret
	used       map[string]bool
}

var errTemplateShape = errors.New(`a template may use only {{.target}}, {{.params.NAME}} of a declared property, and the functions json, query, path and (in headers) secret "NAME"`)

// parseTemplate parses one template with the restricted functions and
// missingkey=error, and refuses anything beyond what tmplCheck allows.
func parseTemplate(name, text string, chk *tmplCheck, headerOK bool) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, err
	}
	if len(t.Templates()) > 1 {
		return nil, fmt.Errorf("%w (no define or block)", errTemplateShape)
	}
	if t.Tree == nil || t.Tree.Root == nil {
		return t, nil
	}
	if err := chk.node(t.Tree.Root, headerOK); err != nil {
		return nil, err
	}
	return t, nil
}

func (c *tmplCheck) node(n parse.Node, headerOK bool) error {
	switch n := n.(type) {
	case *parse.ListNode:
		for _, m := range n.Nodes {
			if err := c.node(m, headerOK); err != nil {
				return err
			}
		}
		return nil
	case *parse.TextNode, *parse.CommentNode:
		return nil
	case *parse.ActionNode:
		return c.pipe(n.Pipe, headerOK)
	default:
		return fmt.Errorf("%w: %s", errTemplateShape, n)
	}
}

func (c *tmplCheck) pipe(p *parse.PipeNode, headerOK bool) error {
	if len(p.Decl) > 0 {
		return fmt.Errorf("%w (no variables): %s", errTemplateShape, p)
	}
	for i, cmd := range p.Cmds {
		if err := c.command(cmd, i > 0, headerOK); err != nil {
			return err
		}
	}
	return nil
}

// command checks one command of a pipeline: a value alone ({{.target}},
// {{.params.NAME}}, a parenthesized pipeline) or a function and its
// arguments; piped (a later command of a pipeline) it must be a function.
func (c *tmplCheck) command(cmd *parse.CommandNode, piped, headerOK bool) error {
	fn, isFunc := cmd.Args[0].(*parse.IdentifierNode)
	if !isFunc {
		if piped || len(cmd.Args) != 1 {
			return fmt.Errorf("%w: %s", errTemplateShape, cmd)
		}
		return c.value(cmd.Args[0], headerOK)
	}
	switch fn.Ident {
	case "json", "query", "path":
		for _, a := range cmd.Args[1:] {
			if err := c.value(a, headerOK); err != nil {
				return err
			}
		}
		return nil
	case "secret":
		if !headerOK {
			return errors.New(`secret is allowed only in headers (a URL or body is shown to operators, decided by the policy and recorded)`)
		}
		if piped || len(cmd.Args) != 2 {
			return errors.New(`secret takes one quoted secret name: {{secret "NAME"}}`)
		}
		s, ok := cmd.Args[1].(*parse.StringNode)
		if !ok {
			return errors.New(`secret takes one quoted secret name: {{secret "NAME"}}`)
		}
		if _, declared := c.secrets[s.Text]; !declared {
			return fmt.Errorf("secret %q is not declared in secrets", s.Text)
		}
		if c.used == nil {
			c.used = map[string]bool{}
		}
		c.used[s.Text] = true
		return nil
	}
	return fmt.Errorf("%w: function %s is not allowed", errTemplateShape, fn.Ident)
}

func (c *tmplCheck) value(n parse.Node, headerOK bool) error {
	switch n := n.(type) {
	case *parse.FieldNode:
		switch {
		case len(n.Ident) == 1 && n.Ident[0] == "target":
			return nil
		case len(n.Ident) == 2 && n.Ident[0] == "params":
			if !slices.Contains(c.properties, n.Ident[1]) {
				return fmt.Errorf("%s: param %q is not declared in the params schema's properties", n, n.Ident[1])
			}
			return nil
		}
		return fmt.Errorf("%w: %s", errTemplateShape, n)
	case *parse.PipeNode:
		return c.pipe(n, headerOK)
	}
	return fmt.Errorf("%w: %s", errTemplateShape, n)
}
