// The third-party authorization server of the tests: oidc-provider (OpenID
// Certified) on 127.0.0.1. Configuration comes as JSON in OIDC_CONFIG:
//   { clients: [...], resource: "https://api.github.com", scopes: ["repo", ...],
//     accessTokenTtl: seconds, groups: { login: [group, ...] }, deviceFlow: bool }
// It listens on a free port and prints {"issuer": ...} once ready.
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const cfg = JSON.parse(process.env.OIDC_CONFIG || '{}');
const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;
const resourceScopes = cfg.scopes || ['repo'];
const ttl = cfg.accessTokenTtl || 3600;

const provider = new Provider(issuer, {
  clients: cfg.clients || [],
  scopes: ['openid', 'offline_access', ...resourceScopes],
  pkce: { required: () => true },
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, groups: (cfg.groups || {})[id] || [] }),
  }),
  claims: { openid: ['sub', 'groups'] },
  // Scope claims in the ID token of the code flow too: the sign-in token an
  // admin presents carries its groups, as Cognito's and Entra's do.
  conformIdTokenClaims: false,
  ttl: { AccessToken: ttl, ClientCredentials: ttl, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600 },
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    // The local stack's agent signs its user in with the device flow (RFC 8628).
    deviceFlow: { enabled: !!cfg.deviceFlow },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== cfg.resource) throw new errors.InvalidTarget();
        return {
          scope: resourceScopes.join(' '),
          audience: cfg.resource,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
});
provider.proxy = false;
server.on('request', provider.callback());
process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(JSON.stringify({ issuer }));
