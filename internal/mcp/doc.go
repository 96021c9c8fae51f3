// Package mcp is ExoArmur's MCP gateway (issue 18): the configuration of
// the upstream MCP servers (config.go), their supervised connections
// (upstream.go: the official Go SDK's client, restarted with backoff,
// health for /readyz, a deadline on every call, results bounded), the
// action registrations of their tools (tools.go: mcp.<server>.<tool>,
// classed by the configuration or a trusted server's annotations), and
// the MCP front end (server.go: Streamable HTTP at
// /v1/tenants/{tenant}/mcp, served by internal/api after its guard has
// authenticated and authorized the caller through internal/access, where
// tools/list shows the principal's tools and tools/call is a propose and
// an execute through the one gate). The stdio bridge, exoarmur mcp, is
// internal/app's (bridge.go): it forwards messages to a server's endpoint.
//
// This package reaches a side effect only through the gate: the upstream
// calls that perform a tool are made by the executor kind mcp-tool
// (internal/executor), which is given the Supervisor's Call at wiring and
// runs only with the gate's Permit.
package mcp
