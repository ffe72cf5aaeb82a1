// The official TypeScript MCP SDK's own OAuth flow (an OAuthClientProvider
// with StreamableHTTPClientTransport) signing in to `host serve` by itself.
//
// usage: node oauth_client.mjs MCP_URL CALLBACK_PORT
// It registers dynamically, prints `AUTHORIZE <url>` for the person to open,
// takes the redirect on its own loopback server, checks state and iss (the
// SDK leaves both to the application), then one line per step; when the user
// must consent to a tool it prints `CONSENT <url>` and waits for a line.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import readline from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { ElicitRequestSchema, UrlElicitationRequiredError } from '@modelcontextprotocol/sdk/types.js';

const [mcpUrl, port] = process.argv.slice(2);
const redirect = `http://127.0.0.1:${port}/callback`;
const say = (...words) => console.log(words.join(' '));
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

let arrived;
const next = () => new Promise((resolve) => { arrived = resolve; });
http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>Signed in</title><h1>Signed in</h1><p>Return to the application.</p>');
  arrived(new URL(req.url, redirect).searchParams);
}).listen(Number(port), '127.0.0.1');

class Provider {
  get redirectUrl() { return redirect; }
  get clientMetadata() {
    return { client_name: 'TypeScript SDK test client', redirect_uris: [redirect],
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
      token_endpoint_auth_method: 'none' };
  }
  state() { this.sent = randomBytes(16).toString('base64url'); return this.sent; }
  clientInformation() { return this.client; }
  saveClientInformation(info) { this.client = info; }
  tokens() { return this.saved; }
  saveTokens(tokens) { this.saved = tokens; }
  redirectToAuthorization(url) { this.answer = next(); say('AUTHORIZE', url.toString()); }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
  saveDiscoveryState(state) { this.metadata = state.authorizationServerMetadata; }
}

const provider = new Provider();
const client = new Client({ name: 'airlock-test-ts', version: '0.0.0' },
  { capabilities: { elicitation: { url: {} } } });
client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'decline' }));

async function connect() {
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  try {
    await client.connect(transport);
    return transport;
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
  }
  const q = await provider.answer;
  if (q.get('error')) { say('DENIED', q.get('error')); process.exit(3); }
  if (q.get('state') !== provider.sent) throw new Error('state mismatch');
  if (q.get('iss') !== provider.metadata.issuer) throw new Error(`iss ${q.get('iss')} is not ${provider.metadata.issuer}`);
  await transport.finishAuth(q.get('code'));
  const again = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  await client.connect(again);
  return again;
}

const transport = await connect();
say('VERSION', transport.protocolVersion ?? client.getServerVersion()?.version);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
say('TOOLS', JSON.stringify(tools));
const stats = await client.callTool({ name: 'text-stats', arguments: { text: 'a b a', top: 1 } });
say('STATS', JSON.stringify(stats.structuredContent));
let result;
try {
  result = await client.callTool({ name: 'github-issues', arguments: {} });
} catch (e) {
  if (!(e instanceof UrlElicitationRequiredError)) throw e;
  say('CONSENT', e.elicitations[0].url);
  await lines.next();
  result = await client.callTool({ name: 'github-issues', arguments: {} });
}
if (result.isError) throw new Error(JSON.stringify(result));
say('DATA', result.structuredContent.issues[0].title);
say('CLIENT', provider.client.client_id);
process.exit(0);
