// Self-test for provider.mjs: `node tests/oidc/check.mjs` (after `npm ci` in tests/oidc).
// Starts the provider as a child process and plays a relying party with plain fetch, a tiny
// cookie jar and manual redirects. Exits 0 only if every check passes.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

const CLIENT_ID = 'llmlite';
const CLIENT_SECRET = 'check-secret';
const REDIRECT_URI = 'http://127.0.0.1:4000/ui/oidc/callback';
const POST_LOGOUT_URI = 'http://127.0.0.1:4000/ui/login';

let failures = 0;
function check(name, cond, detail) {
  if (cond) console.log(`ok   ${name}`);
  else { failures += 1; console.log(`FAIL ${name}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`); }
}

// ---- start provider ---------------------------------------------------------------------------
const child = spawn(process.execPath, [
  fileURLToPath(new URL('./provider.mjs', import.meta.url)),
  '--port', '0', '--client-id', CLIENT_ID, '--client-secret', CLIENT_SECRET,
  '--redirect-uri', REDIRECT_URI, '--redirect-uri', 'http://127.0.0.1:4000/other/callback',
  '--post-logout-redirect-uri', POST_LOGOUT_URI,
], { stdio: ['ignore', 'pipe', 'pipe'] });
let stderr = '';
child.stderr.on('data', (d) => { stderr += d; });
const firstLine = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`provider not ready:\n${stderr}`)), 15000);
  createInterface({ input: child.stdout }).once('line', (line) => { clearTimeout(timer); resolve(line); });
  child.once('exit', (code) => reject(new Error(`provider exited ${code}:\n${stderr}`)));
});
const ready = firstLine.match(/^oidc-provider ready (http:\/\/127\.0\.0\.1:\d+)$/);
check('ready line', ready, firstLine);
const ISSUER = ready[1];

// ---- tiny cookie jar (single host; OP cookie names are unique, so paths are ignored) --------
const jar = new Map();
function storeCookies(res) {
  for (const c of res.headers.getSetCookie()) {
    const [pair, ...attrs] = c.split(';');
    const i = pair.indexOf('=');
    const name = pair.slice(0, i).trim();
    const value = pair.slice(i + 1).trim();
    const expired = attrs.some((a) => /^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]) < Date.now());
    if (!value || expired) jar.delete(name); else jar.set(name, value);
    if (/;\s*secure/i.test(c)) check(`cookie ${name} not Secure over http`, false, c);
  }
}
async function http(url, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const res = await fetch(url, { ...opts, headers, redirect: 'manual' });
  storeCookies(res);
  return res;
}
const form = (obj) => new URLSearchParams(obj);
const basic = `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64')}`;
const testApi = (path, body) => fetch(`${ISSUER}/__test/${path}`, body === undefined ? {} : {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
}).then((r) => r.json());

try {
  // ---- discovery ------------------------------------------------------------------------------
  const disco = await (await fetch(`${ISSUER}/.well-known/openid-configuration`)).json();
  check('discovery issuer', disco.issuer === ISSUER, disco.issuer);
  check('discovery end_session_endpoint', Boolean(disco.end_session_endpoint));
  check('discovery scopes', ['openid', 'email', 'profile', 'groups', 'offline_access'].every((s) => disco.scopes_supported.includes(s)));
  const JWKS = createRemoteJWKSet(new URL(disco.jwks_uri));

  // ---- the relying party's login ------------------------------------------------------------
  // Returns { code, nonce, verifier, loginStatus, sawLoginPage }.
  async function authorize(account, { expectLoginFailure, extra = {} } = {}) {
    const state = randomBytes(8).toString('hex');
    const nonce = randomBytes(8).toString('hex');
    const verifier = randomBytes(32).toString('base64url');
    const challenge = createHash('sha256').update(verifier).digest('base64url');
    let url = `${disco.authorization_endpoint}?${form({
      client_id: CLIENT_ID, response_type: 'code', scope: 'openid email profile groups',
      redirect_uri: REDIRECT_URI, state, nonce, code_challenge: challenge, code_challenge_method: 'S256', ...extra,
    })}`;
    let sawLoginPage = false;
    for (let hop = 0; hop < 10; hop += 1) {
      if (url.startsWith(REDIRECT_URI)) {
        const q = new URL(url).searchParams;
        if (q.get('state') !== state) throw new Error(`state mismatch in ${url}`);
        if (q.get('error')) throw new Error(`authorization error ${url}`);
        return { code: q.get('code'), nonce, verifier, sawLoginPage };
      }
      let res = await http(url);
      if (res.status === 200 && /\/interaction\//.test(url)) {
        const html = await res.text();
        sawLoginPage = true;
        if (!/<title>Company sign-in<\/title>/.test(html) || !/id="login"/.test(html) || !/id="sign-in"/.test(html)) {
          throw new Error('login page does not look right');
        }
        const action = html.match(/<form method="post" action="([^"]+)"/)[1];
        res = await http(new URL(action, url), {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: form({ login: account, password: 'whatever' }),
        });
        if (expectLoginFailure) return { loginStatus: res.status, body: await res.text() };
      }
      if (![302, 303].includes(res.status)) throw new Error(`unexpected ${res.status} at ${url}: ${await res.text()}`);
      url = new URL(res.headers.get('location'), url).href;
    }
    throw new Error('too many redirects');
  }
  async function token(body) {
    const res = await fetch(disco.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
      body: form(body),
    });
    return { status: res.status, body: await res.json() };
  }
  const exchange = (a) => token({
    grant_type: 'authorization_code', code: a.code, redirect_uri: REDIRECT_URI, code_verifier: a.verifier,
  });
  const verify = (idToken) => jwtVerify(idToken, JWKS, { issuer: ISSUER, audience: CLIENT_ID, algorithms: ['RS256'] });

  // ---- full code flow as alice --------------------------------------------------------------
  const a1 = await authorize('alice');
  check('login page shown on first login', a1.sawLoginPage);
  const t1 = await exchange(a1);
  check('code exchange 200', t1.status === 200, t1.body);
  check('refresh_token issued without offline_access', Boolean(t1.body.refresh_token));
  const { payload: p1 } = await verify(t1.body.id_token);
  check('id_token nonce', p1.nonce === a1.nonce, p1.nonce);
  check('id_token sub', p1.sub === 'alice', p1.sub);
  check('id_token email claims', p1.email === 'alice@example.com' && p1.email_verified === true, p1);
  check('id_token name', p1.name === 'Alice Admin', p1.name);
  check('id_token groups', JSON.stringify(p1.groups) === '["llm-admins","platform"]', p1.groups);
  check('id_token lifetime 1h', p1.exp - p1.iat === 3600, p1.exp - p1.iat);
  const ui = await (await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${t1.body.access_token}` } })).json();
  check('userinfo claims', ui.sub === 'alice' && ui.email === 'alice@example.com' && ui.groups?.length === 2, ui);

  const replay = await exchange(a1);
  check('replayed code refused', replay.status === 400 && replay.body.error === 'invalid_grant', replay);

  const noPkce = await token({ grant_type: 'authorization_code', code: (await authorize('alice')).code, redirect_uri: REDIRECT_URI });
  check('code exchange without code_verifier refused', noPkce.status === 400 && noPkce.body.error === 'invalid_grant', noPkce);

  const noChallenge = await http(`${disco.authorization_endpoint}?${form({
    client_id: CLIENT_ID, response_type: 'code', scope: 'openid', redirect_uri: REDIRECT_URI, state: 's',
  })}`);
  check('authorization request without PKCE refused', new URL(noChallenge.headers.get('location') || 'x:').searchParams.get('error') === 'invalid_request', noChallenge.headers.get('location'));

  const consentOnly = await authorize('alice', { extra: { prompt: 'consent', scope: 'openid email profile groups offline_access' } });
  check('consent-only interaction granted automatically', !consentOnly.sawLoginPage && Boolean(consentOnly.code));
  const tco = await exchange(consentOnly);
  check('offline_access scope granted', tco.status === 200 && tco.body.scope.includes('offline_access') && Boolean(tco.body.refresh_token), tco.body.scope);

  // ---- tampered id_tokens -------------------------------------------------------------------
  const realKid = decodeProtectedHeader(t1.body.id_token).kid;
  const expected = {
    wrong_key: (e) => e.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
    wrong_audience: (e) => e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && e.claim === 'aud',
    expired: (e) => e.code === 'ERR_JWT_EXPIRED',
    wrong_issuer: (e) => e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && e.claim === 'iss',
    nonce: (e) => e.code === 'NONCE_MISMATCH',
  };
  for (const [mode, isRightError] of Object.entries(expected)) {
    await testApi('tamper', { mode });
    const a = await authorize('alice');
    const t = await exchange(a);
    let error;
    try {
      const { payload } = await verify(t.body.id_token);
      if (payload.nonce !== a.nonce) error = Object.assign(new Error('nonce mismatch'), { code: 'NONCE_MISMATCH' });
    } catch (e) { error = e; }
    check(`tamper ${mode} keeps real kid`, decodeProtectedHeader(t.body.id_token).kid === realKid);
    check(`tamper ${mode} rejected for the right reason`, error && isRightError(error), error && `${error.code} ${error.claim ?? ''} ${error.message}`);
  }
  const afterTamper = await exchange(await authorize('alice'));
  check('tamper mode resets after one use', (await verify(afterTamper.body.id_token)).payload.sub === 'alice');

  // ---- login failures ---------------------------------------------------------------------
  jar.clear();
  const unknown = await authorize('mallory', { expectLoginFailure: true });
  check('unknown account gets 401 + form', unknown.loginStatus === 401 && /id="login"/.test(unknown.body), unknown.loginStatus);

  // ---- refresh, then disable the account ----------------------------------------------------
  jar.clear();
  await testApi('accounts', { carol: { groups: ['developers', 'data', 'new-team'] } });
  const tc = await exchange(await authorize('carol'));
  check('carol groups updated via /__test/accounts', (await verify(tc.body.id_token)).payload.groups?.includes('new-team'));
  const r1 = await token({ grant_type: 'refresh_token', refresh_token: tc.body.refresh_token });
  check('refresh works', r1.status === 200 && Boolean(r1.body.access_token) && Boolean(r1.body.id_token), r1);
  await testApi('accounts', { carol: { disabled: true } });
  const r2 = await token({ grant_type: 'refresh_token', refresh_token: r1.body.refresh_token || tc.body.refresh_token });
  check('refresh for disabled account -> invalid_grant', r2.status === 400 && r2.body.error === 'invalid_grant', r2);
  jar.clear();
  const disabled = await authorize('carol', { expectLoginFailure: true });
  check('disabled account cannot sign in (401)', disabled.loginStatus === 401, disabled.loginStatus);
  await testApi('accounts', { carol: { disabled: false } });

  // ---- logout ---------------------------------------------------------------------------------
  jar.clear();
  const tb = await exchange(await authorize('bob'));
  const logout = await http(`${disco.end_session_endpoint}?${form({
    id_token_hint: tb.body.id_token, post_logout_redirect_uri: POST_LOGOUT_URI, state: 'bye',
  })}`);
  check('end_session GET -> 303 to post_logout_redirect_uri', logout.status === 303
    && logout.headers.get('location') === `${POST_LOGOUT_URI}?state=bye`, [logout.status, logout.headers.get('location')]);
  check('OP session cookie cleared', !jar.has('op_session'), [...jar.keys()]);
  const again = await authorize('bob');
  check('login page shown again after logout', again.sawLoginPage);
  const r3 = await token({ grant_type: 'refresh_token', refresh_token: tb.body.refresh_token });
  check('refresh token revoked by logout', r3.status === 400 && r3.body.error === 'invalid_grant', r3);

  jar.clear(); // a server-side caller without OP cookies
  const ta = await exchange(again);
  const logout2 = await http(`${disco.end_session_endpoint}?${form({ id_token_hint: ta.body.id_token, post_logout_redirect_uri: POST_LOGOUT_URI })}`);
  check('end_session without OP cookie -> 303 too', logout2.status === 303 && logout2.headers.get('location') === POST_LOGOUT_URI, logout2.headers.get('location'));

  // ---- log ------------------------------------------------------------------------------------
  const log = await testApi('log');
  const codeOk = log.token.filter((t) => t.grant_type === 'authorization_code' && t.ok).length;
  const refresh = log.token.filter((t) => t.grant_type === 'refresh_token');
  check('log counts code exchanges', codeOk === 11, codeOk);
  check('log counts refreshes', refresh.length === 3 && refresh.filter((t) => t.ok).length === 1, refresh);
  check('log records end_session', log.end_session.length === 2 && log.end_session.every((e) => e.id_token_hint && e.ok), log.end_session);
  check('log counts authorization requests', log.authorization >= 11, log.authorization);
} catch (err) {
  failures += 1;
  console.log(`FAIL exception: ${err.stack}`);
} finally {
  child.kill('SIGTERM');
}
const exitCode = await new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
check('provider exits cleanly on SIGTERM', exitCode === 0, exitCode);
if (failures) console.log(`--- provider stderr ---\n${stderr}`);
console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
