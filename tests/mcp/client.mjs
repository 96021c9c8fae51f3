// The official TypeScript SDK client, for cmd/exoarmur's
// TestMCPAcceptanceTypeScript: node client.mjs URL list | call TOOL ARGS_JSON
// prints one line of JSON: the tools' names, or the tool's result.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, op, tool, args] = process.argv.slice(2);
const key = process.env.EXOARMUR_API_KEY;
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "ts-acceptance", version: "1.0.0" });
try {
  await client.connect(transport);
  if (op === "list") {
    const { tools } = await client.listTools();
    console.log(JSON.stringify(tools.map((t) => t.name).sort()));
  } else {
    const r = await client.callTool({ name: tool, arguments: JSON.parse(args) });
    console.log(JSON.stringify(r));
  }
  await client.close();
} catch (e) {
  console.log(JSON.stringify({ protocolError: { code: e.code ?? null, message: String(e.message ?? e) } }));
  process.exitCode = 0;
}
