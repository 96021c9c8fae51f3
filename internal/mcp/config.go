package mcp

// The MCP configuration (serve --mcp-config FILE, check-config
// --mcp-config): the upstream MCP servers, from static configuration only.
// docs/MCP.md documents the format:
//
//	{"servers": {"fs": {"command": ["node", "/path/server-filesystem/dist/index.js", "/srv/shared"],
//	                    "env": {"LOG_LEVEL": "warn"},
//	                    "tools": {"read_text_file": "A0", "write_file": "A1"}},
//	             "web": {"url": "http://127.0.0.1:9000/mcp",
//	                     "headers": {"Authorization": "Bearer ${secret:WEB_TOKEN}"},
//	                     "trusted": true}}}
//
// Decoded as the actions file is (internal/action/file.go): YAML to JSON
// by sigs.k8s.io/yaml (duplicate keys refused), then strict JSON decoding
// (an unknown field is an error naming it). A header or env value may
// hold ${secret:NAME} references: the secret is the environment variable
// NAME of the ExoArmur process, loaded as an actions file's env secret
// (action.LoadEnvSecret), injected here (server side) only, and never
// shown: the configuration prints each as action.SecretPlaceholder.

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/exoarmur/exoarmur/internal/action"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// ErrInvalid wraps every error of a configuration that does not parse or
// check.
var ErrInvalid = errors.New("invalid MCP configuration")

// MaxConfigBytes bounds a configuration file.
const MaxConfigBytes = 1 << 20

// Config is a parsed MCP configuration: the upstream servers by name.
type Config struct {
	Servers []Server // sorted by name
}

// Server is one upstream MCP server: exactly one of Command (a stdio
// server the gateway starts) or URL (a Streamable HTTP server).
type Server struct {
	Name    string
	Command []string
	Env     []Var // the variables a stdio server gets beside PATH and HOME, sorted
	URL     string
	Headers []Var // the headers sent to an HTTP server, sorted by canonical name
	// Trusted lets the tools' annotations decide the class of a tool the
	// mapping does not name (readOnlyHint → A0, destructiveHint → A3).
	Trusted bool
	// Tools maps tool names to classes (A0..A3).
	Tools map[string]string
}

// Var is a name and a value that may hold secrets.
type Var struct {
	Name  string
	Value Value
}

// Value is a configured string with ${secret:NAME} references.
type Value struct {
	parts []part
}

type part struct {
	text   string
	secret string         // the secret's name, when this part is one
	loaded *action.Secret // its value, when loaded
}

// String is the value with each secret as its placeholder.
func (v Value) String() string {
	var b strings.Builder
	for _, p := range v.parts {
		if p.secret != "" {
			b.WriteString(action.SecretPlaceholder(p.secret))
			continue
		}
		b.WriteString(p.text)
	}
	return b.String()
}

// reveal is the value with its secrets' values: only for the upstream
// connection. ok is false when a secret was not loaded.
func (v Value) reveal() (string, bool) {
	var b strings.Builder
	for _, p := range v.parts {
		if p.secret != "" {
			if p.loaded == nil {
				return "", false
			}
			b.WriteString(p.loaded.Value())
			continue
		}
		b.WriteString(p.text)
	}
	return b.String(), true
}

// secrets returns the loaded secrets the value holds.
func (v Value) secrets() []*action.Secret {
	var out []*action.Secret
	for _, p := range v.parts {
		if p.loaded != nil {
			out = append(out, p.loaded)
		}
	}
	return out
}

// ParseOptions configure ParseConfig.
type ParseOptions struct {
	// Secrets, when set, loads every referenced secret (serve,
	// check-config); nil leaves them unloaded.
	Secrets action.SecretSource
}

type configFile struct {
	Servers map[string]serverFile `json:"servers"`
}

type serverFile struct {
	Command []string          `json:"command"`
	Env     map[string]string `json:"env"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Trusted bool              `json:"trusted"`
	Tools   map[string]string `json:"tools"`
}

var (
	// serverName: one word of an action type mcp.<server>.<tool>.
	serverName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
	// toolName: what a tool name may be to become an action type.
	toolName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	secretRe = regexp.MustCompile(`\$\{secret:([^}]*)\}`)
	// reservedHeaders are the transport's own.
	reservedHeaders = []string{"Host", "Content-Length", "Content-Type", "Accept", "Transfer-Encoding", "Connection", "Te", "Trailer", "Upgrade",
		"Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id"}
	// baseEnv are the variables of ExoArmur's own environment a stdio
	// server gets (nothing else of it: no credential of the gateway).
	baseEnv = []string{"PATH", "HOME"}
)

// ParseConfig parses and checks the configuration name holds (data).
// Every error names the file and the field, and wraps ErrInvalid.
func ParseConfig(name string, data []byte, opt ParseOptions) (*Config, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("mcp config %s: %w: %s", name, ErrInvalid, fmt.Sprintf(format, args...))
	}
	var f configFile
	if err := action.DecodeConfig(data, MaxConfigBytes, &f); err != nil {
		return nil, fail("%v", err)
	}
	if len(f.Servers) == 0 {
		return nil, fail("servers: at least one server is required")
	}
	c := &Config{}
	for _, sn := range slices.Sorted(maps.Keys(f.Servers)) {
		s, err := parseServer(sn, f.Servers[sn], opt)
		if err != nil {
			return nil, fail("%v", err)
		}
		c.Servers = append(c.Servers, s)
	}
	return c, nil
}

// LoadConfig reads and parses a configuration file.
func LoadConfig(path string, opt ParseOptions) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mcp config: %w", err)
	}
	return ParseConfig(path, data, opt)
}

func parseServer(name string, f serverFile, opt ParseOptions) (Server, error) {
	field := "servers." + name
	bad := func(sub, format string, args ...any) error {
		if sub != "" {
			sub = "." + sub
		}
		return fmt.Errorf("%s%s: %s", field, sub, fmt.Sprintf(format, args...))
	}
	s := Server{Name: name, Trusted: f.Trusted, Tools: map[string]string{}}
	switch {
	case !serverName.MatchString(name):
		return s, bad("", "a server's name is a lower-case letter then lower-case letters, digits or _ (at most 32): it is a word of the action types mcp.<server>.<tool>")
	case (len(f.Command) == 0) == (f.URL == ""):
		return s, bad("", "give exactly one of command (a stdio server) or url (a Streamable HTTP server)")
	case f.URL != "" && len(f.Env) > 0:
		return s, bad("env", "only a stdio server (command) takes an environment")
	case len(f.Command) > 0 && len(f.Headers) > 0:
		return s, bad("headers", "only an HTTP server (url) takes headers")
	}
	for i, a := range f.Command {
		switch {
		case i == 0 && strings.TrimSpace(a) == "":
			return s, bad("command", "the program (the first element) is empty")
		case strings.ContainsRune(a, 0):
			return s, bad(fmt.Sprintf("command[%d]", i), "holds a NUL byte")
		}
	}
	s.Command = slices.Clone(f.Command)
	for _, en := range slices.Sorted(maps.Keys(f.Env)) {
		sub := "env." + en
		if !envName.MatchString(en) {
			return s, bad(sub, "not a valid environment variable name")
		}
		v, err := parseValue(f.Env[en], opt)
		if err != nil {
			return s, bad(sub, "%v", err)
		}
		s.Env = append(s.Env, Var{Name: en, Value: v})
	}
	if f.URL != "" {
		u, err := url.Parse(f.URL)
		switch {
		case err != nil:
			return s, bad("url", "not a URL: %v", err)
		case u.Scheme != "http" && u.Scheme != "https":
			return s, bad("url", "the scheme must be http or https")
		case u.Host == "":
			return s, bad("url", "no host")
		case u.User != nil:
			return s, bad("url", "credentials go in headers (with ${secret:NAME}), not in the URL")
		case strings.Contains(f.URL, "${"):
			return s, bad("url", "a secret may be referenced only in headers and env")
		}
		s.URL = f.URL
	}
	for _, hn := range slices.Sorted(maps.Keys(f.Headers)) {
		sub := "headers." + hn
		canon := textproto.CanonicalMIMEHeaderKey(hn)
		switch {
		case !action.ValidHeaderName(hn):
			return s, bad(sub, "not a valid header name")
		case slices.Contains(reservedHeaders, canon):
			return s, bad(sub, "%s is set by the MCP transport", canon)
		case slices.ContainsFunc(s.Headers, func(v Var) bool { return v.Name == canon }):
			return s, bad(sub, "declared twice (header names are case-insensitive)")
		}
		v, err := parseValue(f.Headers[hn], opt)
		if err != nil {
			return s, bad(sub, "%v", err)
		}
		s.Headers = append(s.Headers, Var{Name: canon, Value: v})
	}
	slices.SortFunc(s.Headers, func(a, b Var) int { return strings.Compare(a.Name, b.Name) })
	for _, tn := range slices.Sorted(maps.Keys(f.Tools)) {
		sub := "tools." + tn
		switch {
		case !toolName.MatchString(tn):
			return s, bad(sub, "a tool name here is a lower-case letter or digit then lower-case letters, digits, _ or - (at most 64): it becomes the action type %s", action.MCPToolType(name, tn))
		case !contract.ValidClass(f.Tools[tn]):
			return s, bad(sub, "class %q is not one of A0, A1, A2, A3", f.Tools[tn])
		}
		s.Tools[tn] = f.Tools[tn]
	}
	return s, nil
}

// parseValue splits a configured value into text and ${secret:NAME}
// references, loading each secret when opt.Secrets is set.
func parseValue(raw string, opt ParseOptions) (Value, error) {
	if strings.IndexFunc(raw, unicode.IsControl) >= 0 {
		return Value{}, errors.New("holds a control character or line break")
	}
	var v Value
	last := 0
	for _, m := range secretRe.FindAllStringSubmatchIndex(raw, -1) {
		if m[0] > last {
			v.parts = append(v.parts, part{text: raw[last:m[0]]})
		}
		sn := raw[m[2]:m[3]]
		p := part{secret: sn}
		if opt.Secrets != nil {
			sec, err := action.LoadEnvSecret(opt.Secrets, sn)
			if err != nil {
				return Value{}, fmt.Errorf("${secret:%s}: %v", sn, err)
			}
			p.loaded = sec
		} else if err := action.CheckSecretName(sn); err != nil {
			return Value{}, fmt.Errorf("${secret:%s}: %v", sn, err)
		}
		v.parts = append(v.parts, p)
		last = m[1]
	}
	if last < len(raw) {
		v.parts = append(v.parts, part{text: raw[last:]})
	}
	if strings.Contains(v.String(), "${") {
		return Value{}, errors.New("a reference is written ${secret:NAME}")
	}
	return v, nil
}

// Environment is the environment a stdio server is started with: PATH
// and HOME of this process (when set) and the server's configured
// variables, secrets revealed. Nothing else of this process's
// environment: no credential of the gateway reaches an upstream.
func (s Server) Environment(lookup func(string) (string, bool)) ([]string, error) {
	var env []string
	for _, n := range baseEnv {
		if slices.ContainsFunc(s.Env, func(v Var) bool { return v.Name == n }) {
			continue
		}
		if v, ok := lookup(n); ok {
			env = append(env, n+"="+v)
		}
	}
	for _, v := range s.Env {
		val, ok := v.Value.reveal()
		if !ok {
			return nil, fmt.Errorf("servers.%s.env.%s: a secret is not loaded", s.Name, v.Name)
		}
		env = append(env, v.Name+"="+val)
	}
	return env, nil
}

// header returns the headers sent to an HTTP server, secrets revealed.
func (s Server) header() (http.Header, error) {
	h := http.Header{}
	for _, v := range s.Headers {
		val, ok := v.Value.reveal()
		if !ok {
			return nil, fmt.Errorf("servers.%s.headers.%s: a secret is not loaded", s.Name, v.Name)
		}
		h.Set(v.Name, val)
	}
	return h, nil
}

// Secrets lists the loaded secrets the server's headers and env hold
// (for redacting their echo from a tool's result).
func (s Server) Secrets() []*action.Secret {
	var out []*action.Secret
	for _, v := range append(slices.Clone(s.Env), s.Headers...) {
		out = append(out, v.Value.secrets()...)
	}
	return out
}

// Transport says how the server is reached, for logs and check-config.
func (s Server) Transport() string {
	if s.URL != "" {
		return "streamable-http " + s.URL
	}
	return "stdio " + s.Command[0]
}

// Names lists the configured servers' names.
func (c *Config) Names() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.Name)
	}
	return out
}
