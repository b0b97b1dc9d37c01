// A real OpenID Connect provider for shippy-rs tests: panva's certified `oidc-provider`, on
// loopback, with RS256 keys made at start, two confidential clients and accounts given as JSON.
//
// Usage: node provider.mjs [PORT] [--exit-on-stdin-close]   (PORT 0 or absent: a free port)
//   --exit-on-stdin-close  also stop when stdin closes, so a test process that dies without
//                          stopping it (SIGKILL, abort) leaves no provider behind
// Environment:
//   OIDC_ACCOUNTS           JSON list of accounts: [{"email":"a@b.c","email_verified":true}, ...]
//                           ("sub" may be given; otherwise a stable id made from the email)
//   OIDC_ID_TOKEN_TTL       lifetime of ID tokens in seconds (default 3600)
//   OIDC_CLIENT_SECRET      the secret of both clients (default "shippy-test-secret")
//   OIDC_REDIRECT_URI       their redirect URI (default http://127.0.0.1/callback)
//
// Once listening it prints exactly one line on stdout: `issuer=http://127.0.0.1:PORT`. Logs and
// errors go to stderr. SIGTERM or SIGINT closes the server and exits 0.
//
// Login is this file's own minimal interaction handler rather than oidc-provider's
// devInteractions: those take the typed login verbatim as the account id, so `sub` would have to
// be the email. Here the login form takes an email (any password), looks the account up, refuses
// unknown emails with 401, and the consent form grants what was asked. login.mjs drives both
// through plain HTTP, as a browser would.

import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const CLIENT_IDS = ['shippy', 'someone-else'];

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(1);
}

function loadAccounts() {
  let list;
  try {
    list = JSON.parse(process.env.OIDC_ACCOUNTS ?? '[]');
  } catch (error) {
    fail(`OIDC_ACCOUNTS is not JSON: ${error.message}`);
  }
  if (!Array.isArray(list)) fail('OIDC_ACCOUNTS must be a JSON list of {"email","email_verified"}');
  const byEmail = new Map();
  const bySub = new Map();
  for (const entry of list) {
    if (typeof entry?.email !== 'string' || entry.email === '') {
      fail(`every account needs an "email" string, got ${JSON.stringify(entry)}`);
    }
    const account = {
      email: entry.email,
      email_verified: entry.email_verified === true,
      // Stable across restarts and independent of list order, and never the email itself, so a
      // relying party that confuses `sub` with `email` is caught.
      sub: entry.sub ?? `acct-${createHash('sha256').update(entry.email.toLowerCase()).digest('hex').slice(0, 20)}`,
    };
    byEmail.set(account.email.toLowerCase(), account);
    bySub.set(account.sub, account);
  }
  return { byEmail, bySub };
}

function positiveInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value <= 0) fail(`${name} must be a positive whole number of seconds, got ${raw}`);
  return value;
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `rs256-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(`<!doctype html><html><head><title>${escapeHtml(title)}</title></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

const accounts = loadAccounts();
const idTokenTtl = positiveInt('OIDC_ID_TOKEN_TTL', 3600);
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'shippy-test-secret';
const redirectUri = process.env.OIDC_REDIRECT_URI || 'http://127.0.0.1/callback';
const args = process.argv.slice(2);
const exitOnStdinClose = args.includes('--exit-on-stdin-close');
const portArg = args.find((arg) => !arg.startsWith('--')) ?? '0';
const port = Number(portArg);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`the port must be 0..65535, got ${portArg}`);

// The issuer must name the port, so the server listens first and the provider is made after.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
}).catch((error) => fail(`cannot listen on 127.0.0.1:${port}: ${error.message}`));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: CLIENT_IDS.map((clientId) => ({
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  })),
  jwks: { keys: [signingKey()] },
  // Signed session/interaction cookies (oidc-provider warns without keys).
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  // By default, claims a scope asks for go into the ID token only when no access token is issued
  // alongside it; the code flow issues one, so without this the ID token would carry `sub` only.
  conformIdTokenClaims: false,
  ttl: { IdToken: idTokenTtl },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const account = accounts.bySub.get(sub);
    if (!account) return undefined;
    return {
      accountId: account.sub,
      async claims() {
        return { sub: account.sub, email: account.email, email_verified: account.email_verified };
      },
    };
  },
});
// Logged so a failing test shows why the provider refused something.
provider.on('server_error', (_ctx, error) => process.stderr.write(`provider.mjs: server_error: ${error.stack}\n`));
provider.on('grant.error', (_ctx, error) => process.stderr.write(`provider.mjs: grant.error: ${error.message} ${error.error_description ?? ''}\n`));
provider.on('authorization.error', (_ctx, error) => process.stderr.write(`provider.mjs: authorization.error: ${error.message} ${error.error_description ?? ''}\n`));

const providerCallback = provider.callback();

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, 'Wrong interaction', '<p>The cookie belongs to another interaction.</p>');
  const { prompt, params, session } = details;

  if (req.method === 'GET' && action === undefined) {
    if (prompt.name === 'login') {
      return page(res, 200, 'Sign-in', `<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<input type="hidden" name="prompt" value="login">
<label>Email <input name="email" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form>`);
    }
    if (prompt.name === 'consent') {
      return page(res, 200, 'Authorize', `<p>${escapeHtml(params.client_id)} asks for: ${escapeHtml(params.scope)}</p>
<form method="post" action="/interaction/${escapeHtml(uid)}/confirm">
<input type="hidden" name="prompt" value="consent">
<button type="submit">Continue</button></form>`);
    }
    return page(res, 501, 'Not implemented', `<p>prompt ${escapeHtml(prompt.name)}</p>`);
  }

  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await readForm(req);
    const email = (form.get('email') ?? '').trim().toLowerCase();
    const account = accounts.byEmail.get(email);
    if (!account) {
      return page(res, 401, 'Sign-in failed', `<p class="error">no account with the email ${escapeHtml(email)}</p>`);
    }
    return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
  }

  if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
    await readForm(req);
    const { details: missing } = prompt;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  return page(res, 400, 'Unexpected step', `<p>${escapeHtml(req.method)} ${escapeHtml(action ?? '')} during the ${escapeHtml(prompt.name)} prompt</p>`);
}

server.on('request', (req, res) => {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm))?\/?$/.exec(new URL(req.url, issuer).pathname);
  if (!match) return providerCallback(req, res);
  interaction(req, res, match[1], match[2]).catch((error) => {
    // interactionDetails throws SessionNotFound for an expired or foreign interaction cookie.
    process.stderr.write(`provider.mjs: interaction ${match[1]}: ${error.message}\n`);
    if (!res.headersSent) page(res, 400, 'Interaction failed', `<p>${escapeHtml(error.message)}</p>`);
    else res.end();
  });
});

function shutdown() {
  server.close(() => process.exit(0));
  // Keep-alive connections of clients would hold close() open.
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (exitOnStdinClose) {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

process.stdout.write(`issuer=${issuer}\n`);
