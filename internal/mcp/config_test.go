package mcp

import (
	"errors"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/exoarmur/exoarmur/internal/contract"
)

type envSecrets map[string]string

func (e envSecrets) LookupEnv(n string) (string, bool) { v, ok := e[n]; return v, ok }
func (e envSecrets) ReadFile(string) ([]byte, error)   { return nil, errors.New("no files") }

const issueConfig = `{"servers": {"fs": {"command": ["node", "/path/to/server-filesystem/dist/index.js", "/srv/shared"],
                    "tools": {"read_text_file": "A0", "list_directory": "A0", "write_file": "A1"}},
             "web": {"url": "http://127.0.0.1:9000/mcp", "headers": {"Authorization": "${secret:WEB_TOKEN}"}, "trusted": true}}}`

const webToken = "web-token-0123456789"

// TestParseConfigIssueShape: the issue's example parses, JSON or YAML,
// the secret loaded but shown only as its placeholder.
func TestParseConfigIssueShape(t *testing.T) {
	yamlCfg := `servers:
  fs:
    command: [node, /path/to/server-filesystem/dist/index.js, /srv/shared]
    tools: {read_text_file: A0, list_directory: A0, write_file: A1}
  web:
    url: http://127.0.0.1:9000/mcp
    headers: {Authorization: "${secret:WEB_TOKEN}"}
    trusted: true
`
	for name, src := range map[string]string{"c.json": issueConfig, "c.yaml": yamlCfg} {
		c, err := ParseConfig(name, []byte(src), ParseOptions{Secrets: envSecrets{"WEB_TOKEN": webToken}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Join(c.Names(), ",") != "fs,web" {
			t.Fatalf("%s: servers %v", name, c.Names())
		}
		fs, web := c.Servers[0], c.Servers[1]
		if fs.Tools["write_file"] != "A1" || len(fs.Command) != 3 || fs.URL != "" || fs.Trusted {
			t.Errorf("%s: fs = %+v", name, fs)
		}
		if !web.Trusted || web.Headers[0].Name != "Authorization" || web.Headers[0].Value.String() != "<secret:WEB_TOKEN>" {
			t.Errorf("%s: web = %+v", name, web)
		}
		h, err := web.header()
		if err != nil || h.Get("Authorization") != webToken {
			t.Errorf("%s: header %v %v", name, h, err)
		}
	}
}

func TestParseConfigRefusals(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`{}`, "servers: at least one server"},
		{`{"servers": {"fs": {"command": ["x"], "tols": {}}}}`, `unknown field "tols"`},
		{`{"servers": {"Fs": {"command": ["x"]}}}`, "servers.Fs: a server's name"},
		{`{"servers": {"fs": {}}}`, "servers.fs: give exactly one of command"},
		{`{"servers": {"fs": {"command": ["x"], "url": "http://h/"}}}`, "servers.fs: give exactly one of command"},
		{`{"servers": {"fs": {"command": [""]}}}`, "servers.fs.command: the program"},
		{`{"servers": {"fs": {"url": "ftp://h/"}}}`, "servers.fs.url: the scheme"},
		{`{"servers": {"fs": {"url": "http://u:p@h/"}}}`, "servers.fs.url: credentials go in headers"},
		{`{"servers": {"fs": {"url": "http://h/", "env": {"A": "b"}}}}`, "servers.fs.env: only a stdio server"},
		{`{"servers": {"fs": {"command": ["x"], "headers": {"A": "b"}}}}`, "servers.fs.headers: only an HTTP server"},
		{`{"servers": {"fs": {"url": "http://h/", "headers": {"Host": "b"}}}}`, "servers.fs.headers.Host: Host is set by the MCP transport"},
		{`{"servers": {"fs": {"url": "http://h/", "headers": {"A": "${secret:NOPE}"}}}}`, "servers.fs.headers.A: ${secret:NOPE}: environment variable NOPE is not set"},
		{`{"servers": {"fs": {"url": "http://h/", "headers": {"A": "${secret:SHORT}"}}}}`, "shorter than 8 bytes"},
		{`{"servers": {"fs": {"url": "http://h/", "headers": {"A": "${secret:}"}}}}`, "${secret:}: a secret's name"},
		{`{"servers": {"fs": {"url": "http://h/", "headers": {"A": "${env:X}"}}}}`, "a reference is written ${secret:NAME}"},
		{`{"servers": {"fs": {"command": ["x"], "tools": {"write_file": "A4"}}}}`, `servers.fs.tools.write_file: class "A4"`},
		{`{"servers": {"fs": {"command": ["x"], "tools": {"Write": "A1"}}}}`, "servers.fs.tools.Write: a tool name"},
		{"servers:\n  fs: {command: [x]}\n  fs: {command: [y]}\n", "not valid YAML or JSON"},
	} {
		_, err := ParseConfig("c.yaml", []byte(tc.src), ParseOptions{Secrets: envSecrets{"SHORT": "abc", "WEB_TOKEN": webToken}})
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "mcp config c.yaml: ") {
			t.Errorf("%s:\n got %v\nwant %q", tc.src, err, tc.want)
		}
	}
}

// TestEnvironmentIsMinimal: a stdio server gets PATH, HOME and its own
// variables, never the rest of the gateway's environment.
func TestEnvironmentIsMinimal(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte(`{"servers": {"fs": {"command": ["x"], "env": {"LEVEL": "warn", "TOKEN": "t=${secret:FS_TOKEN}"}}}}`),
		ParseOptions{Secrets: envSecrets{"FS_TOKEN": "fs-token-123456"}})
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]string{"PATH": "/usr/bin", "HOME": "/root", "EXOARMUR_API_KEY": "exo_secret", "AWS_SECRET_ACCESS_KEY": "x"}
	env, err := c.Servers[0].Environment(func(n string) (string, bool) { v, ok := own[n]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(env, " "); got != "PATH=/usr/bin HOME=/root LEVEL=warn TOKEN=t=fs-token-123456" {
		t.Fatalf("environment %q", got)
	}
}

func TestClassOf(t *testing.T) {
	yes := true
	mapped := Server{Tools: map[string]string{"w": contract.A1}}
	trusted := Server{Trusted: true, Tools: map[string]string{"w": contract.A1}}
	for _, tc := range []struct {
		s    Server
		tool sdk.Tool
		want string
	}{
		{mapped, sdk.Tool{Name: "w", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}}, contract.A1},
		{mapped, sdk.Tool{Name: "r", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}}, contract.A2},  // untrusted: hints ignored
		{trusted, sdk.Tool{Name: "w", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}}, contract.A1}, // the mapping wins
		{trusted, sdk.Tool{Name: "r", Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true}}, contract.A0},
		{trusted, sdk.Tool{Name: "d", Annotations: &sdk.ToolAnnotations{DestructiveHint: &yes}}, contract.A3},
		{trusted, sdk.Tool{Name: "n", Annotations: &sdk.ToolAnnotations{}}, contract.A2},
		{trusted, sdk.Tool{Name: "n"}, contract.A2},
	} {
		if got := ClassOf(tc.s, &tc.tool); got != tc.want {
			t.Errorf("ClassOf(trusted=%v, %s %+v) = %s, want %s", tc.s.Trusted, tc.tool.Name, tc.tool.Annotations, got, tc.want)
		}
	}
}

func TestCheckInputSchema(t *testing.T) {
	for _, ok := range []any{map[string]any{"type": "object"}, map[string]any{"type": "object", "properties": map[string]any{"path": map[string]any{"type": "string"}}}} {
		if err := checkInputSchema(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range []any{nil, "x", map[string]any{"type": "string"}, map[string]any{"type": "object", "properties": 3},
		map[string]any{"type": "object", "$ref": "http://example.com/s.json"}} {
		if err := checkInputSchema(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// FuzzParseConfig: any bytes parse into servers or are refused with an
// error naming the file and wrapping ErrInvalid; never a panic, never an
// error or a shown value holding a secret's value.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(issueConfig))
	f.Add([]byte(`{"servers": {"a": {"command": ["x"], "env": {"K": "${secret:WEB_TOKEN}${secret:WEB_TOKEN}"}}}}`))
	f.Add([]byte("servers:\n  a: &x {url: 'http://h/'}\n  b: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("f.yaml", data, ParseOptions{Secrets: envSecrets{"WEB_TOKEN": webToken}})
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "mcp config f.yaml: ") || strings.Contains(err.Error(), webToken) {
				t.Fatalf("error %v", err)
			}
			return
		}
		for _, s := range c.Servers {
			for _, v := range append(s.Env, s.Headers...) {
				if strings.Contains(v.Value.String(), webToken) {
					t.Fatalf("%s shows the secret", v.Name)
				}
			}
			if (len(s.Command) == 0) == (s.URL == "") {
				t.Fatalf("server %s: neither or both transports", s.Name)
			}
		}
	})
}
