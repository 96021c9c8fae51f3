// Command mcpupstream is a Go SDK MCP server for the end-to-end tests:
// over stdio, or over Streamable HTTP with -http ADDR. Its tools: echo
// (read-only), append (appends its text to -effects, one line per call:
// the test counts the effects), crash (exits mid-call), hang (never
// answers), big (a result of -big bytes), env (lists its environment's
// names) and bad_schema (an input schema that is no schema).
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"sort"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	httpAddr := flag.String("http", "", "serve Streamable HTTP on this address (default: stdio)")
	effects := flag.String("effects", "", "file the append tool appends to")
	big := flag.Int("big", 4<<20, "bytes of the big tool's result")
	token := flag.String("token", "", "over HTTP: the bearer token required")
	flag.Parse()

	s := mcp.NewServer(&mcp.Implementation{Name: "upstream", Version: "1"}, nil)
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	obj := map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}}
	s.AddTool(&mcp.Tool{Name: "echo", Description: "echoes text", InputSchema: obj, Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(_ context.Context, r *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return text("echo: " + string(r.Params.Arguments)), nil
		})
	s.AddTool(&mcp.Tool{Name: "append", Description: "appends text to the effects file", InputSchema: obj},
		func(_ context.Context, r *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			f, err := os.OpenFile(*effects, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			if _, err := f.WriteString(string(r.Params.Arguments) + "\n"); err != nil {
				return nil, err
			}
			return text("appended"), nil
		})
	s.AddTool(&mcp.Tool{Name: "crash", Description: "exits mid-call", InputSchema: obj},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) { os.Exit(3); return nil, nil })
	s.AddTool(&mcp.Tool{Name: "hang", Description: "never answers", InputSchema: obj},
		func(ctx context.Context, _ *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			<-ctx.Done()
			select {}
		})
	s.AddTool(&mcp.Tool{Name: "big", Description: "a large result", InputSchema: obj},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return text(strings.Repeat("x", *big)), nil
		})
	s.AddTool(&mcp.Tool{Name: "env", Description: "its environment's names", InputSchema: obj},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var names []string
			for _, kv := range os.Environ() {
				n, _, _ := strings.Cut(kv, "=")
				names = append(names, n)
			}
			sort.Strings(names)
			return text(strings.Join(names, ",")), nil
		})
	s.AddTool(&mcp.Tool{Name: "bad_schema", Description: "invalid input schema", InputSchema: map[string]any{"type": "object", "properties": 7}},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) { return text("never"), nil })

	if *httpAddr == "" {
		if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			log.Fatal(err)
		}
		return
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	log.Fatal(http.ListenAndServe(*httpAddr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *token != "" && r.Header.Get("Authorization") != "Bearer "+*token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})))
}
