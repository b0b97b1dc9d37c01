// Obtains an ID token from the provider started by provider.mjs through the real
// authorization-code flow (with PKCE), as a browser plus a relying party would: GET the
// authorization endpoint, follow the redirects with a cookie jar, fill in the sign-in form,
// confirm consent, take the code from the redirect to the client's redirect URI and redeem it at
// the token endpoint with the client's secret (client_secret_basic).
//
// Usage: node login.mjs ISSUER CLIENT_ID CLIENT_SECRET EMAIL
// Environment: OIDC_REDIRECT_URI (default http://127.0.0.1/callback), OIDC_PASSWORD (default "any").
//
// Prints the ID token alone on stdout and exits 0; otherwise prints one sentence on stderr and
// exits 1 (2 for wrong usage).

import { createHash, randomBytes } from 'node:crypto';

const [issuer, clientId, clientSecret, email] = process.argv.slice(2);
if (process.argv.length !== 6) {
  process.stderr.write('usage: node login.mjs ISSUER CLIENT_ID CLIENT_SECRET EMAIL\n');
  process.exit(2);
}
const redirectUri = process.env.OIDC_REDIRECT_URI || 'http://127.0.0.1/callback';
const password = process.env.OIDC_PASSWORD || 'any';
const MAX_STEPS = 12;
const TIMEOUT_MS = 10_000;

class LoginError extends Error {}

const base64url = (bytes) => Buffer.from(bytes).toString('base64url');
const textOf = (html) => html.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();

// Cookies by name; every cookie the provider sets is for this one host, and their names differ,
// so paths can be ignored.
const jar = new Map();
function keepCookies(response) {
  for (const line of response.headers.getSetCookie()) {
    const [pair, ...attributes] = line.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a)
      || (/^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]) <= Date.now()));
    if (expired || value === '') jar.delete(name);
    else jar.set(name, value);
  }
}

async function send(url, init = {}) {
  const headers = { ...init.headers };
  if (jar.size) headers.cookie = [...jar].map(([name, value]) => `${name}=${value}`).join('; ');
  let response;
  try {
    response = await fetch(url, { ...init, headers, redirect: 'manual', signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (error) {
    throw new LoginError(`cannot reach ${url}: ${error.cause?.message ?? error.message}`);
  }
  keepCookies(response);
  return response;
}

// The one form of an HTML page: its action and its fields.
function formOf(html, pageUrl) {
  const form = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) return undefined;
  const action = /\baction="([^"]*)"/i.exec(form[1])?.[1] ?? pageUrl;
  const fields = new URLSearchParams();
  for (const [, attributes] of form[2].matchAll(/<input\b([^>]*)>/gi)) {
    const name = /\bname="([^"]*)"/i.exec(attributes)?.[1];
    if (name) fields.set(name, /\bvalue="([^"]*)"/i.exec(attributes)?.[1] ?? '');
  }
  return { action: new URL(action, pageUrl).href, fields };
}

async function main() {
  const discoveryUrl = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  const discoveryResponse = await send(discoveryUrl);
  if (!discoveryResponse.ok) throw new LoginError(`${discoveryUrl} answered ${discoveryResponse.status}`);
  const discovery = await discoveryResponse.json();

  const state = base64url(randomBytes(16));
  const nonce = base64url(randomBytes(16));
  const verifier = base64url(randomBytes(32));
  const authorize = new URL(discovery.authorization_endpoint);
  authorize.search = new URLSearchParams({
    client_id: clientId,
    response_type: 'code',
    scope: 'openid email',
    redirect_uri: redirectUri,
    state,
    nonce,
    code_challenge: base64url(createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
  }).toString();

  let url = authorize.href;
  let response = await send(url);
  let callback;
  for (let step = 0; step < MAX_STEPS && !callback; step += 1) {
    if (response.status >= 300 && response.status < 400) {
      const location = new URL(response.headers.get('location'), url).href;
      if (location.startsWith(redirectUri)) {
        callback = new URL(location);
        break;
      }
      url = location;
      response = await send(url);
      continue;
    }
    const body = await response.text();
    const form = response.ok ? formOf(body, url) : undefined;
    if (!form) {
      throw new LoginError(`the provider answered ${response.status} at ${new URL(url).pathname}: ${textOf(body).slice(0, 300)}`);
    }
    if (form.fields.get('prompt') === 'login') {
      form.fields.set('email', email);
      form.fields.set('password', password);
    }
    url = form.action;
    response = await send(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form.fields.toString(),
    });
  }
  if (!callback) throw new LoginError(`no redirect to ${redirectUri} after ${MAX_STEPS} steps`);

  const params = callback.searchParams;
  if (params.get('error')) {
    throw new LoginError(`the provider refused the authorization: ${params.get('error')}: ${params.get('error_description') ?? ''}`);
  }
  if (params.get('state') !== state) throw new LoginError('the redirect came back with another state');
  const code = params.get('code');
  if (!code) throw new LoginError(`the redirect carried no code: ${callback.href}`);

  const tokenResponse = await send(discovery.token_endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`,
    },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier,
    }).toString(),
  });
  const tokens = await tokenResponse.json().catch(() => ({}));
  if (!tokenResponse.ok) {
    throw new LoginError(`the token endpoint answered ${tokenResponse.status}: ${tokens.error ?? ''} ${tokens.error_description ?? ''}`.trim());
  }
  if (typeof tokens.id_token !== 'string') throw new LoginError('the token endpoint answered without an id_token');
  const payload = JSON.parse(Buffer.from(tokens.id_token.split('.')[1] ?? '', 'base64url').toString('utf8'));
  if (payload.nonce !== nonce) throw new LoginError('the ID token carries another nonce');
  process.stdout.write(`${tokens.id_token}\n`);
}

main().catch((error) => {
  const message = error instanceof LoginError ? error.message : `unexpected failure: ${error.stack ?? error}`;
  process.stderr.write(`login.mjs: ${message}\n`);
  process.exit(1);
});
