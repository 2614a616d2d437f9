// Loopback OpenID Provider for llmlite's OIDC integration tests and the selenium UI test.
//
// It is a real OpenID Provider (npm `oidc-provider`, see package.json for the pinned version)
// with one confidential client, three in-memory accounts, a minimal "Company sign-in" page and
// a few JSON control endpoints under /__test/ that let a test disable accounts, change groups,
// make the next ID token invalid in a chosen way and count what the relying party did.
//
// Usage (tests run `npm ci --no-audit --no-fund` in this folder first):
//
//   node tests/oidc/provider.mjs --port 0 --client-id llmlite --client-secret SECRET \
//     --redirect-uri http://127.0.0.1:4000/ui/oidc/callback [--redirect-uri ...] \
//     [--post-logout-redirect-uri http://127.0.0.1:4000/ui/login ...]
//
// It binds 127.0.0.1 only (`--port 0` picks a free port), prints exactly one stdout line
//   oidc-provider ready http://127.0.0.1:<port>
// (the issuer, no trailing slash) and runs until SIGTERM/SIGINT. Diagnostics go to stderr.
//
// Behaviour a relying party can rely on:
//   * scopes: openid email profile groups offline_access. The ID token itself carries
//     email/email_verified (scope email), name (scope profile) and groups (scope groups,
//     which must be requested as a scope). /me (userinfo) returns the same claims.
//   * authorization code + PKCE S256 (PKCE is REQUIRED), client_secret_basic, codes live 60 s and
//     are single use; every code exchange also returns a refresh_token (no offline_access or
//     prompt=consent needed). Refreshing for a disabled account fails with invalid_grant.
//   * login: GET /interaction/:uid is a form (#login, #password, #sign-in); POSTing
//     login=<account id> to /interaction/:uid/login signs in and consents in one step.
//   * logout: a plain GET (or POST) of end_session_endpoint with id_token_hint (and optionally
//     post_logout_redirect_uri/state) ends the OP session and answers 303 straight to the
//     post_logout_redirect_uri (or /session/end/success) - no confirmation page.
//   * OP cookies are named op_session / op_interaction / op_interaction_resume, SameSite=Lax,
//     not Secure (plain http), so they never clash with the gateway's cookies on 127.0.0.1.
//
// Control endpoints (JSON):
//   POST /__test/accounts  {"bob": {"groups": [...], "disabled": true, "email": ..., "name": ...}}
//                          merges into the accounts (creates unknown ones); returns all accounts.
//   POST /__test/tamper    {"mode": "wrong_key"|"wrong_audience"|"expired"|"nonce"|"wrong_issuer"|null}
//                          the next successful authorization_code token response gets a bad id_token.
//   GET  /__test/log       {"authorization": n, "login": [...], "token": [{grant_type, ok, error}],
//                           "end_session": [{id_token_hint, post_logout_redirect_uri, ok, location}]}
//   POST /__test/log/clear resets the log.

import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
import {
  SignJWT, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair,
} from 'jose';

// Notices of oidc-provider go through console.info (stdout); keep stdout for the ready line only.
console.info = (...args) => console.error(...args);

// Exit cleanly (status 0) on SIGTERM/SIGINT, even while still starting up.
let server;
const shutdown = () => {
  server?.close();
  server?.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'client-id': { type: 'string', default: 'llmlite' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    'post-logout-redirect-uri': { type: 'string', multiple: true, default: [] },
  },
});
if (!args['client-secret'] || !args['redirect-uri']?.length) {
  console.error('usage: provider.mjs --port 0 --client-id ID --client-secret SECRET --redirect-uri URI [...]');
  process.exit(2);
}

// ---- accounts -------------------------------------------------------------------------------
const accounts = {
  alice: { email: 'alice@example.com', name: 'Alice Admin', groups: ['llm-admins', 'platform'], disabled: false },
  bob: { email: 'bob@example.com', name: 'Bob Developer', groups: ['developers'], disabled: false },
  carol: { email: 'carol@example.com', name: 'Carol Developer', groups: ['developers', 'data'], disabled: false },
};
const activeAccount = (id) => (Object.hasOwn(accounts, id) && !accounts[id].disabled ? accounts[id] : undefined);

// ---- test log and tamper state --------------------------------------------------------------
const newLog = () => ({ authorization: 0, login: [], token: [], end_session: [] });
let log = newLog();
let tamperMode = null;
const TAMPER_MODES = ['wrong_key', 'wrong_audience', 'expired', 'nonce', 'wrong_issuer'];

// ---- signing key owned by the harness (so it can re-sign tampered ID tokens) -----------------
const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: 'test-rs256-1', alg: 'RS256', use: 'sig' };

// ---- HTTP server first: the issuer needs the real port ---------------------------------------
let handler = (req, res) => { res.statusCode = 503; res.end(); };
server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

// ---- tiny HTML helpers (no external assets) -------------------------------------------------
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;
const loginPage = (uid, error, login) => page('Company sign-in', `<h1>Company sign-in</h1>
${error ? `<p id="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label>Username <input id="login" name="login" value="${esc(login)}" autofocus></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="sign-in" type="submit">Sign in</button>
</form>`);

// ---- provider -------------------------------------------------------------------------------
const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    client_name: 'llmlite',
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: args['redirect-uri'],
    post_logout_redirect_uris: args['post-logout-redirect-uri'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  }],
  jwks: { keys: [signingJwk] },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put scope-granted claims into the ID token even though an access token is also issued.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => true }, // only S256 is supported by oidc-provider 9
  async findAccount(_ctx, sub) {
    const a = activeAccount(sub);
    if (!a) return undefined; // unknown/disabled: code and refresh grants fail with invalid_grant
    return {
      accountId: sub,
      async claims() {
        return {
          sub, email: a.email, email_verified: true, name: a.name, groups: [...a.groups],
        };
      },
    };
  },
  // A refresh token on every code exchange, not only with offline_access.
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
  },
  cookies: {
    names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_interaction_resume' },
    long: { httpOnly: true, sameSite: 'lax' },
    short: { httpOnly: true, sameSite: 'lax' },
  },
  clientBasedCORS: () => false,
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      // Only shown if the automatic confirmation below did not happen: auto-submitting form.
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out', `${form.replace('</form>', '<input type="hidden" name="logout" value="yes"></form>')}
<button id="logout" type="submit" form="op.logoutForm">Sign out</button>
<script>document.getElementById('op.logoutForm').submit()</script>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<h1>Signed out</h1>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1>${Object.entries(out).map(([k, v]) => `<p><b>${esc(k)}</b>: ${esc(v)}</p>`).join('')}`);
  },
});

// ---- helpers for our own routes -------------------------------------------------------------
async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] || '').includes('application/json')) return text ? JSON.parse(text) : {};
  return Object.fromEntries(new URLSearchParams(text));
}
const json = (ctx, status, body) => { ctx.status = status; ctx.type = 'json'; ctx.body = body; };

// Grant everything the authorization request asked for (login and consent in one step).
async function grantAll(interaction, accountId) {
  const { params, prompt: { details } } = interaction;
  let grant;
  if (interaction.grantId) grant = await provider.Grant.find(interaction.grantId);
  if (!grant || grant.accountId !== accountId) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }
  if (params.scope) grant.addOIDCScope(params.scope);
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function tamperIdToken(idToken, mode) {
  const header = decodeProtectedHeader(idToken); // keeps alg/kid of the real signing key
  const payload = decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  let key = privateKey;
  switch (mode) {
    case 'wrong_key': key = (await generateKeyPair('RS256')).privateKey; break;
    case 'wrong_audience': payload.aud = 'someone-else'; break;
    case 'expired': Object.assign(payload, { iat: now - 7200, auth_time: now - 7200, exp: now - 3600 }); break;
    case 'nonce': payload.nonce = 'not-the-nonce'; break;
    case 'wrong_issuer': payload.iss = 'http://127.0.0.1:1'; break;
    default: return idToken;
  }
  return new SignJWT(payload).setProtectedHeader(header).sign(key);
}

const params = (ctx) => { try { return ctx.oidc?.params || {}; } catch { return {}; } };

// ---- middleware in front of oidc-provider's router ------------------------------------------
provider.use(async (ctx, next) => {
  const { path, method } = ctx;

  // Test control endpoints. The server listens on 127.0.0.1 only; double-check anyway.
  if (path.startsWith('/__test/')) {
    const ip = ctx.req.socket.remoteAddress || '';
    if (!['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(ip)) return json(ctx, 403, { error: 'loopback only' });
    if (path === '/__test/log' && method === 'GET') return json(ctx, 200, log);
    if (path === '/__test/log/clear' && method === 'POST') { log = newLog(); return json(ctx, 200, log); }
    if (path === '/__test/accounts' && method === 'GET') return json(ctx, 200, accounts);
    if (path === '/__test/accounts' && method === 'POST') {
      const body = await readBody(ctx.req);
      for (const [id, patch] of Object.entries(body || {})) {
        const current = accounts[id] || {
          email: `${id}@example.com`, name: id, groups: [], disabled: false,
        };
        accounts[id] = { ...current, ...patch };
      }
      return json(ctx, 200, accounts);
    }
    if (path === '/__test/tamper' && method === 'POST') {
      const { mode = null } = await readBody(ctx.req);
      if (mode !== null && !TAMPER_MODES.includes(mode)) return json(ctx, 400, { error: `unknown mode ${mode}` });
      tamperMode = mode;
      return json(ctx, 200, { mode });
    }
    return json(ctx, 404, { error: 'not found' });
  }

  // Interactions (replacing oidc-provider's devInteractions).
  const m = path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (m) {
    ctx.set('cache-control', 'no-store');
    let interaction;
    try {
      interaction = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      ctx.status = 400; ctx.type = 'html';
      ctx.body = page('Error', `<h1>Error</h1><p>${esc(err.message)}</p>`);
      return undefined;
    }
    if (interaction.uid !== m[1]) { ctx.status = 400; ctx.body = 'interaction mismatch'; return undefined; }

    if (method === 'GET' && !m[2]) {
      if (interaction.prompt.name === 'login') {
        ctx.type = 'html'; ctx.body = loginPage(interaction.uid); return undefined;
      }
      // Already signed in and only consent is missing: grant it without asking.
      const accountId = interaction.session?.accountId;
      const grantId = await grantAll(interaction, accountId);
      ctx.status = 303;
      return ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true }));
    }
    if (method === 'POST' && m[2]) {
      const { login = '' } = await readBody(ctx.req);
      if (!activeAccount(login)) {
        log.login.push({ login, ok: false });
        ctx.status = 401; ctx.type = 'html';
        ctx.body = loginPage(interaction.uid, 'Unknown or disabled account.', login);
        return undefined;
      }
      log.login.push({ login, ok: true });
      const grantId = await grantAll(interaction, login);
      const returnTo = await provider.interactionResult(ctx.req, ctx.res, {
        login: { accountId: login },
        consent: { grantId },
      }, { mergeWithLastSubmission: false });
      ctx.status = 303;
      return ctx.redirect(returnTo);
    }
    ctx.status = 405;
    return undefined;
  }

  await next();

  // After oidc-provider handled the request: record, tamper, auto-confirm logout.
  if (path === '/auth' && ['GET', 'POST'].includes(method)) log.authorization += 1;

  if (path === '/token' && method === 'POST') {
    const grantType = params(ctx).grant_type;
    const ok = ctx.status === 200;
    log.token.push({ grant_type: grantType, ok, ...(ok ? {} : { error: ctx.body?.error }) });
    if (ok && grantType === 'authorization_code' && tamperMode && ctx.body?.id_token) {
      const mode = tamperMode;
      tamperMode = null;
      ctx.body = { ...ctx.body, id_token: await tamperIdToken(ctx.body.id_token, mode) };
      log.token.at(-1).tampered = mode;
    }
  }

  if (path === '/session/end' && ['GET', 'POST'].includes(method)) {
    const p = params(ctx);
    const entry = {
      id_token_hint: Boolean(p.id_token_hint),
      post_logout_redirect_uri: p.post_logout_redirect_uri ?? null,
      ok: false,
    };
    log.end_session.push(entry);
    const secret = ctx.status === 200 ? ctx.oidc?.session?.state?.secret : undefined;
    if (secret) {
      // Submit oidc-provider's own confirmation form on the user's behalf ("yes, sign me out").
      const res = await fetch(`${issuer}/session/end/confirm`, {
        method: 'POST',
        redirect: 'manual',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          cookie: `${provider.cookieName('session')}=${ctx.oidc.session.id}`,
        },
        body: new URLSearchParams({ xsrf: secret, logout: 'yes' }),
      });
      ctx.remove('set-cookie');
      const cookies = res.headers.getSetCookie();
      if (cookies.length) ctx.set('set-cookie', cookies);
      const location = res.headers.get('location');
      if (res.status === 303 && location) {
        ctx.status = 303;
        ctx.redirect(location);
        Object.assign(entry, { ok: true, location });
      } else {
        ctx.status = res.status;
        ctx.type = res.headers.get('content-type') || 'text/plain';
        ctx.body = await res.text();
      }
    }
  }
  return undefined;
});

provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));

handler = provider.callback();
process.stdout.write(`oidc-provider ready ${issuer}\n`);

