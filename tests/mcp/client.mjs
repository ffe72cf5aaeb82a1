// The official TypeScript MCP SDK (npm @modelcontextprotocol/sdk, pinned)
// against `host serve`, declaring URL elicitation. usage: client.mjs URL ALB_HEADER
// Prints one line per step; when the user must consent it prints
// `CONSENT <url>` and waits for a line on stdin.
import readline from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UrlElicitationRequiredError } from '@modelcontextprotocol/sdk/types.js';

const [url, header] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (...words) => console.log(...words);
const consent = async (u) => { say('CONSENT', u); await lines.next(); };

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { 'x-amzn-oidc-data': header } },
});
const client = new Client({ name: 'airlock-test', version: '0.0.0' },
  { capabilities: { elicitation: { url: {} } } });
await client.connect(transport);
say('VERSION', client.getServerVersion()?.name, transport.protocolVersion);
const { tools } = await client.listTools();
say('TOOLS', JSON.stringify(tools.map((t) => t.name).sort()));
let result = await client.callTool({ name: 'text-stats', arguments: { text: 'a b a', top: 1 } });
if (result.isError) throw new Error(JSON.stringify(result));
say('STATS', JSON.stringify(result.structuredContent));
try {
  result = await client.callTool({ name: 'github-issues', arguments: {} });
  throw new Error(`expected a URL elicitation, got ${JSON.stringify(result)}`);
} catch (e) {
  if (!(e instanceof UrlElicitationRequiredError)) throw e;
  say('ELICITATION-ERROR');
  await consent(e.elicitations[0].url);
}
result = await client.callTool({ name: 'github-issues', arguments: {} });
if (result.isError) throw new Error(JSON.stringify(result));
say('DATA', result.structuredContent.issues[0].title);
await transport.terminateSession();
await client.close();
process.exit(0);
