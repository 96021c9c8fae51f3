package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/exoarmur/exoarmur/internal/tenant"
)

// runMCP: exoarmur mcp --tenant T. A stdio bridge for a local agent: it
// forwards each JSON-RPC message between its standard input and output
// (the Go SDK's StdioTransport) and the running server's MCP endpoint,
// /v1/tenants/T/mcp (StreamableClientTransport, the key from
// EXOARMUR_API_KEY as its bearer). It holds no tool logic: every call
// passes that server's access layer, gate and store.
func runMCP(ctx context.Context, env Env, args []string) error {
	var a apiFlags
	fs := newCommand(env, cmdHelp{Name: "mcp", Args: "--tenant T [--server URL]",
		About: "Serves MCP over stdio to a local agent, as a thin bridge to a running server's Streamable HTTP endpoint (/v1/tenants/T/mcp): " +
			"every tools/call still passes that server's gate and store. The key comes from EXOARMUR_API_KEY, the server from --server or EXOARMUR_SERVER. " +
			"Configure the agent to start `exoarmur mcp --tenant T` as its MCP server.",
		Example: "mcp --tenant acme --server http://127.0.0.1:8080"})
	fs.StringVar(&a.tenant, "tenant", "", "the tenant whose tools to serve (required)")
	a.registerServer(fs)
	if _, err := fs.parse(args); err != nil {
		return err
	}
	if err := a.requireTenant(); err != nil {
		return err
	}
	key, err := apiKey()
	if err != nil {
		return err
	}
	base, _ := a.serverURL()
	t, _ := tenant.Parse(a.tenant)
	endpoint := strings.TrimSuffix(base, "/") + "/v1/tenants/" + t.String() + "/mcp"
	bt := &bearerTransport{key: key}
	up, err := (&sdk.StreamableClientTransport{Endpoint: endpoint, DisableStandaloneSSE: true,
		// A redirect is the answer: the API key never follows it.
		HTTPClient: &http.Client{Transport: bt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}).Connect(ctx)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	defer up.Close()
	local, err := (&sdk.StdioTransport{}).Connect(ctx)
	if err != nil {
		return err
	}
	defer local.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	forward := func(from, to sdk.Connection) {
		for {
			msg, err := from.Read(ctx)
			if err != nil {
				errc <- err
				return
			}
			bt.negotiated(msg)
			if err := to.Write(ctx, msg); err != nil {
				errc <- err
				return
			}
		}
	}
	go forward(local, up)
	go forward(up, local)
	err = <-errc
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return nil // the agent closed its end
	}
	return err
}

// bearerTransport authenticates every request with the API key and,
// once the initialize answer named it, sends the negotiated protocol
// version (the bridge forwards raw messages, so the SDK's session, which
// would set it, never sees them): the server then holds every later
// request to that version's rules.
type bearerTransport struct {
	key     string
	version atomic.Value // string
}

func (b *bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	if v, _ := b.version.Load().(string); v != "" && r.Header.Get("Mcp-Protocol-Version") == "" {
		r.Header.Set("Mcp-Protocol-Version", v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// negotiated records the protocol version of an initialize answer.
func (b *bearerTransport) negotiated(msg jsonrpc.Message) {
	resp, ok := msg.(*jsonrpc.Response)
	if !ok || len(resp.Result) == 0 || b.version.Load() != nil { // the first initialize answer only
		return
	}
	var init struct {
		ProtocolVersion string `json:"protocolVersion"`
		ServerInfo      any    `json:"serverInfo"`
	}
	if json.Unmarshal(resp.Result, &init) == nil && init.ProtocolVersion != "" && init.ServerInfo != nil {
		b.version.Store(init.ProtocolVersion)
	}
}
