// A real OpenID provider (npm oidc-provider) for authgate's sign-in of people: one confidential client,
// `authgate`, that must use the authorization code flow with PKCE (S256), and a handful of accounts whose
// claims carry email, email_verified, preferred_username and groups. The ID token carries those claims
// (conformIdTokenClaims: false) and grants are given without a consent step (a first-party client).
//
// Usage: node people.mjs PORT JWKS_FILE   (JWKS_FILE: the private signing keys, made by the test).
// Prints "ready" once it listens on 127.0.0.1:PORT.
//
// Test-only parts, none of which a real provider has:
// - the login page (GET /interaction/:uid) is a one-field form: the account name, no password;
// - redirect URIs are the callback path /authgate/oidc/callback on any host and port (the tests' nginx and
//   Traefik listen on free ports), and post-logout URIs the sign-in page /authgate/sign_in likewise;
// - GET /test/mode?tamper=1 makes the token endpoint hand out ID tokens whose payload was altered after
//   signing (they claim another person: the signature no longer matches); ?tamper=0 stops it.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, jwksFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const CALLBACK = '/authgate/oidc/callback';
const SIGN_IN = '/authgate/sign_in';

const ACCOUNTS = {
  alice: { email: 'alice@example.com', email_verified: true, preferred_username: 'alice', groups: ['ops', 'staff'] },
  bob: { email: 'bob@elsewhere.example', email_verified: true, preferred_username: 'bob', groups: ['staff'] },
  dave: { email: 'dave@example.com', email_verified: true, preferred_username: 'dave', groups: [] },
  carol: { email: 'carol@example.com', email_verified: false, preferred_username: 'carol', groups: ['ops'] },
};
const mode = { tamper: false };

const provider = new Provider(issuer, {
  jwks: JSON.parse(readFileSync(jwksFile, 'utf8')),
  clients: [
    {
      client_id: 'authgate',
      client_secret: 'authgate-oidc-client-secret-0123456789',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [`https://prefect.example.com${CALLBACK}`],
      post_logout_redirect_uris: [`https://prefect.example.com${SIGN_IN}`],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username', 'groups'] },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  cookies: { keys: ['people-test-cookie-key-0123456789'] },
  features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
});
provider.proxy = false;

const pathOf = (value) => {
  try {
    const url = new URL(value);
    return ['http:', 'https:'].includes(url.protocol) && !url.search && !url.hash ? url.pathname : null;
  } catch {
    return null;
  }
};
provider.Client.prototype.redirectUriAllowed = (value) => pathOf(value) === CALLBACK;
provider.Client.prototype.postLogoutRedirectUriAllowed = (value) => pathOf(value) === SIGN_IN;

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
provider.use(async (ctx, next) => {
  await next();
  if (mode.tamper && ctx.path === '/token' && ctx.body && typeof ctx.body.id_token === 'string') {
    const [header, payload, signature] = ctx.body.id_token.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    const forged = { ...claims, sub: 'mallory', email: 'mallory@example.com', groups: ['ops'] };
    ctx.body = { ...ctx.body, id_token: `${header}.${b64(forged)}.${signature}` };
  }
});

const page = (body) => `<!doctype html><html><head><title>Test provider</title></head><body>${body}</body></html>`;
const callback = provider.callback();

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname === '/test/mode') {
      mode.tamper = url.searchParams.get('tamper') === '1';
      res.end(JSON.stringify(mode));
      return;
    }
    const match = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/);
    if (!match) {
      callback(req, res);
      return;
    }
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'GET' && !match[2]) {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(page(`<h1>Test provider</h1><form method="post" action="/interaction/${details.uid}/login">
        <label for="login">Account</label><input id="login" name="login" autofocus>
        <button type="submit">Log in</button></form>`));
      return;
    }
    if (req.method === 'POST' && match[2]) {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      const login = new URLSearchParams(Buffer.concat(chunks).toString()).get('login') || '';
      const result = ACCOUNTS[login]
        ? { login: { accountId: login } }
        : { error: 'access_denied', error_description: 'unknown account' };
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
      return;
    }
    res.statusCode = 405;
    res.end();
  } catch (err) {
    res.statusCode = 400;
    res.end(page(`error: ${String(err && err.message).replace(/[<>&]/g, '')}`));
  }
});
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
