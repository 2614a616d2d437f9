-- Company sign-in: console sessions kept in the database, OIDC users made just in time,
-- sign-in throttling, and the team policy of developers' self-service keys (issue 30).
--
-- 1. `llmlite_console_session`: one row per console session. The cookie holds a random ID (and
--    a MAC under the master key); the row is found by the ID's SHA-256, so the table never holds
--    a live cookie. A session ends at its absolute expiry, after `idle` without a request, at
--    sign-out, or when its user is disabled. `id_token` is kept only to name the session at the
--    identity provider's end-session endpoint, and is cleared when the session ends.
-- 2. `llmlite_sign_in_state`: an OIDC sign-in under way (state, nonce, PKCE verifier), for at
--    most ten minutes. The row is taken (deleted) by the one callback that uses it: a replayed
--    callback finds nothing.
-- 3. `llmlite_sign_in_failure`: failed sign-ins per client address and per account, in
--    fixed windows; too many and sign-in is refused until the window ends.
-- 4. Users: `sso_subject` (the issuer and `sub` a user signs in as) and `disabled_at` (a user
--    deactivated at the identity provider or by `/user/update`: no session, no key).
-- 5. Teams: `max_keys_per_user` and `max_self_service_tier`, what a member may give themselves
--    in the console (NULL: the defaults, 5 keys and `standard`).
-- 6. Admin actions may be about a session (`console.sign_in`, `console.sign_out`).
-- 7. Short-lived keys for developers' machines (`llmlite login`, then `llmlite key` as Claude
--    Code's `apiKeyHelper`): `llmlite_device_grant` is an OAuth 2.0 device authorization
--    (RFC 8628) under way, found by its device code's SHA-256, approved in the console by a
--    person signed in with the company account; `llmlite_cli_credential` is what the command
--    keeps afterwards (a refresh token, by its SHA-256, rotated on every use). Each refresh
--    asks the identity provider, with the provider's own refresh token kept here, whether the
--    person is still enabled there; if not, the credential and its keys end.

CREATE TABLE llmlite_console_session (
    id_hash     TEXT PRIMARY KEY CHECK (id_hash ~ '^[0-9a-f]{64}$'),
    subject     TEXT NOT NULL,          -- 'master', a key's hash, or 'user:' || user_id
    user_id     TEXT,
    csrf        TEXT NOT NULL,
    via         TEXT NOT NULL CHECK (via IN ('key', 'oidc')),
    created_at  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    ended_at    TIMESTAMPTZ,
    id_token    TEXT,
    idp_refresh_token TEXT
);
CREATE INDEX llmlite_console_session_user_idx ON llmlite_console_session (user_id)
    WHERE ended_at IS NULL;
CREATE INDEX llmlite_console_session_expiry_idx ON llmlite_console_session (expires_at);

CREATE TABLE llmlite_sign_in_state (
    state_hash  TEXT PRIMARY KEY CHECK (state_hash ~ '^[0-9a-f]{64}$'),
    nonce       TEXT NOT NULL,
    verifier    TEXT NOT NULL,
    return_to   TEXT NOT NULL DEFAULT '/ui' CHECK (return_to LIKE '/ui%'),
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE llmlite_sign_in_failure (
    scope        TEXT NOT NULL CHECK (scope IN ('ip', 'account')),
    subject      TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    failures     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, subject, window_start)
);

CREATE TABLE llmlite_device_grant (
    device_code_hash TEXT PRIMARY KEY CHECK (device_code_hash ~ '^[0-9a-f]{64}$'),
    user_code        TEXT NOT NULL UNIQUE CHECK (user_code ~ '^[A-Z]{4}-[A-Z]{4}$'),
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    last_polled_at   TIMESTAMPTZ,
    user_id          TEXT,
    approved_at      TIMESTAMPTZ,
    denied           BOOLEAN NOT NULL DEFAULT false,
    idp_refresh_token TEXT
);

CREATE TABLE llmlite_cli_credential (
    id               TEXT PRIMARY KEY,          -- public: named in its keys' metadata
    token_hash       TEXT NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    user_id          TEXT NOT NULL,
    team_id          TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    last_used_at     TIMESTAMPTZ NOT NULL,
    revoked_at       TIMESTAMPTZ,
    idp_refresh_token TEXT
);
CREATE INDEX llmlite_cli_credential_user_idx ON llmlite_cli_credential (user_id)
    WHERE revoked_at IS NULL;

ALTER TABLE litellm_usertable
    ADD COLUMN sso_subject TEXT,
    ADD COLUMN disabled_at TIMESTAMPTZ;
CREATE UNIQUE INDEX litellm_usertable_sso_subject_key ON litellm_usertable (sso_subject)
    WHERE sso_subject IS NOT NULL;

ALTER TABLE litellm_teamtable
    ADD COLUMN max_keys_per_user INTEGER CHECK (max_keys_per_user BETWEEN 0 AND 1000),
    ADD COLUMN max_self_service_tier TEXT
        CHECK (max_self_service_tier IN ('standard', 'admin'));

ALTER TABLE llmlite_admin_action DROP CONSTRAINT llmlite_admin_action_object_type_check;
ALTER TABLE llmlite_admin_action ADD CONSTRAINT llmlite_admin_action_object_type_check
    CHECK (object_type IN ('key', 'user', 'team', 'session'));
