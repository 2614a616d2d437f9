-- llmlite schema. Table names follow the LLD (LiteLLM's tables, lower-cased); llmlite's own
-- tables are prefixed `llmlite_`. Money is NUMERIC everywhere: never a float.
--
-- Budgets: spend is charged at settlement; requests in flight hold a reservation in
-- llmlite_inflight until they settle or their lease expires (a crashed Lambda cannot leak one).

CREATE TABLE litellm_teamtable (
    team_id               TEXT PRIMARY KEY CHECK (length(team_id) BETWEEN 1 AND 256),
    team_alias            TEXT,
    models                TEXT[] NOT NULL DEFAULT '{}',       -- empty: every model
    max_budget            NUMERIC CHECK (max_budget >= 0),
    soft_budget           NUMERIC CHECK (soft_budget >= 0),
    spend                 NUMERIC NOT NULL DEFAULT 0,
    budget_duration       INTERVAL CHECK (budget_duration > INTERVAL '0'),
    budget_reset_at       TIMESTAMPTZ,
    tpm_limit             BIGINT CHECK (tpm_limit >= 0),
    rpm_limit             BIGINT CHECK (rpm_limit >= 0),
    max_parallel_requests INTEGER CHECK (max_parallel_requests >= 0),
    blocked               BOOLEAN NOT NULL DEFAULT false,
    pii_policy            JSONB,                             -- over the global PII policy
    metadata              JSONB NOT NULL DEFAULT '{}',
    created_by            TEXT,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE litellm_usertable (
    user_id               TEXT PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 256),
    user_alias            TEXT,
    user_email            TEXT,
    user_role             TEXT NOT NULL DEFAULT 'internal_user'
                          CHECK (user_role IN ('proxy_admin', 'proxy_admin_viewer',
                                               'internal_user', 'internal_user_viewer')),
    teams                 TEXT[] NOT NULL DEFAULT '{}',
    models                TEXT[] NOT NULL DEFAULT '{}',       -- empty: every model
    max_budget            NUMERIC CHECK (max_budget >= 0),
    soft_budget           NUMERIC CHECK (soft_budget >= 0),
    spend                 NUMERIC NOT NULL DEFAULT 0,
    budget_duration       INTERVAL CHECK (budget_duration > INTERVAL '0'),
    budget_reset_at       TIMESTAMPTZ,
    tpm_limit             BIGINT CHECK (tpm_limit >= 0),
    rpm_limit             BIGINT CHECK (rpm_limit >= 0),
    max_parallel_requests INTEGER CHECK (max_parallel_requests >= 0),
    metadata              JSONB NOT NULL DEFAULT '{}',
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX litellm_usertable_email_key ON litellm_usertable (lower(user_email))
    WHERE user_email IS NOT NULL;

-- Virtual keys, by the SHA-256 hex of the raw key. The raw key is never stored.
CREATE TABLE litellm_verificationtoken (
    token                 TEXT PRIMARY KEY CHECK (token ~ '^[0-9a-f]{64}$'),
    key_name              TEXT NOT NULL,                     -- sk-...abcd
    key_alias             TEXT,
    -- A deleted user's or team's keys stay (deactivated or blocked) for the record.
    user_id               TEXT REFERENCES litellm_usertable (user_id) ON DELETE SET NULL,
    team_id               TEXT REFERENCES litellm_teamtable (team_id) ON DELETE SET NULL,
    models                TEXT[] NOT NULL DEFAULT '{}',       -- empty: every model
    tier                  TEXT CHECK (tier IN ('standard', 'admin')),
    max_budget            NUMERIC CHECK (max_budget >= 0),
    soft_budget           NUMERIC CHECK (soft_budget >= 0),
    spend                 NUMERIC NOT NULL DEFAULT 0,
    budget_duration       INTERVAL CHECK (budget_duration > INTERVAL '0'),
    budget_reset_at       TIMESTAMPTZ,
    tpm_limit             BIGINT CHECK (tpm_limit >= 0),
    rpm_limit             BIGINT CHECK (rpm_limit >= 0),
    max_parallel_requests INTEGER CHECK (max_parallel_requests >= 0),
    expires               TIMESTAMPTZ,                       -- NULL: never
    is_active             BOOLEAN NOT NULL DEFAULT true,     -- false: deleted (row kept for audit)
    blocked               BOOLEAN NOT NULL DEFAULT false,
    pii_policy            JSONB,                             -- over the team's and the global
    metadata              JSONB NOT NULL DEFAULT '{}',
    created_by            TEXT,
    updated_by            TEXT,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_active           TIMESTAMPTZ
);

CREATE INDEX litellm_verificationtoken_user_idx  ON litellm_verificationtoken (user_id);
CREATE INDEX litellm_verificationtoken_team_idx  ON litellm_verificationtoken (team_id);
-- An alias names one live key; deleted keys keep theirs for the record.
CREATE UNIQUE INDEX litellm_verificationtoken_alias_key ON litellm_verificationtoken (key_alias)
    WHERE key_alias IS NOT NULL AND is_active;
-- The rollup function's sweeps: keys whose budget period or lifetime ends.
CREATE INDEX litellm_verificationtoken_reset_idx ON litellm_verificationtoken (budget_reset_at)
    WHERE budget_reset_at IS NOT NULL;
CREATE INDEX litellm_verificationtoken_expires_idx ON litellm_verificationtoken (expires)
    WHERE expires IS NOT NULL AND is_active;

-- Rotation: regenerating a key changes its row's token in place (spend, limits and history
-- stay with the row); the old hash points at the row until revoke_at, the grace period's end.
CREATE TABLE llmlite_deprecated_token (
    token        TEXT PRIMARY KEY CHECK (token ~ '^[0-9a-f]{64}$'),
    active_token TEXT NOT NULL REFERENCES litellm_verificationtoken (token) ON UPDATE CASCADE,
    revoke_at    TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX llmlite_deprecated_token_active_idx ON llmlite_deprecated_token (active_token);

-- Admin actions: who (the master key or an admin key's hash) did what to which object, with
-- the non-secret fields before and after. Written in the same transaction as the change; the
-- audit function ships them to S3.
CREATE TABLE llmlite_admin_action (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    request_id  TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL CHECK (object_type IN ('key', 'user', 'team')),
    object_id   TEXT NOT NULL,
    before      JSONB,
    after       JSONB,
    shipped_at  TIMESTAMPTZ
);

CREATE INDEX llmlite_admin_action_unshipped_idx ON llmlite_admin_action (id) WHERE shipped_at IS NULL;
CREATE INDEX llmlite_admin_action_object_idx ON llmlite_admin_action (object_type, object_id);

-- One row per request, successful or not. Idempotent on request_id so a retried settlement
-- cannot charge twice.
CREATE TABLE litellm_spend (
    request_id                  TEXT PRIMARY KEY,
    call_type                   TEXT NOT NULL,               -- e.g. acompletion
    api_key                     TEXT NOT NULL,               -- key hash
    key_alias                   TEXT,
    user_id                     TEXT,
    team_id                     TEXT,
    end_user                    TEXT,                        -- the request's `user` field
    requester_ip_address        TEXT,
    model                       TEXT NOT NULL,               -- alias the client asked for
    model_id                    TEXT,                        -- Bedrock model / profile ID
    model_group                 TEXT,
    custom_llm_provider         TEXT NOT NULL DEFAULT 'bedrock',
    prompt_tokens               BIGINT NOT NULL DEFAULT 0,
    completion_tokens           BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens     BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens                BIGINT NOT NULL DEFAULT 0,
    spend                       NUMERIC NOT NULL DEFAULT 0 CHECK (spend >= 0),
    start_time                  TIMESTAMPTZ NOT NULL,
    end_time                    TIMESTAMPTZ NOT NULL,
    request_duration_ms         BIGINT NOT NULL DEFAULT 0,
    status                      TEXT NOT NULL CHECK (status IN ('success', 'failure')),
    error_type                  TEXT,
    cache_hit                   BOOLEAN NOT NULL DEFAULT false,
    metadata                    JSONB NOT NULL DEFAULT '{}',
    rolled_at                   TIMESTAMPTZ                  -- set once counted in the daily rollup
);

CREATE INDEX litellm_spend_key_time_idx  ON litellm_spend (api_key, start_time);
CREATE INDEX litellm_spend_user_time_idx ON litellm_spend (user_id, start_time);
CREATE INDEX litellm_spend_team_time_idx ON litellm_spend (team_id, start_time);
-- Rollups and retention scan by time; BRIN stays tiny on an append-only table.
CREATE INDEX litellm_spend_time_brin ON litellm_spend USING brin (start_time);
-- The rollup reads only rows not yet rolled up.
CREATE INDEX litellm_spend_unrolled_idx ON litellm_spend (start_time) WHERE rolled_at IS NULL;

-- Daily rollups (LiteLLM's DailyUserSpend), upserted by increment.
CREATE TABLE litellm_dailyuserspend (
    id                          BIGSERIAL PRIMARY KEY,
    date                        DATE NOT NULL,
    user_id                     TEXT,
    team_id                     TEXT,
    api_key                     TEXT NOT NULL,
    model                       TEXT NOT NULL,
    custom_llm_provider         TEXT NOT NULL DEFAULT 'bedrock',
    endpoint                    TEXT NOT NULL DEFAULT '/v1/chat/completions',
    prompt_tokens               BIGINT NOT NULL DEFAULT 0,
    completion_tokens           BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens     BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
    spend                       NUMERIC NOT NULL DEFAULT 0,
    api_requests                BIGINT NOT NULL DEFAULT 0,
    successful_requests         BIGINT NOT NULL DEFAULT 0,
    failed_requests             BIGINT NOT NULL DEFAULT 0,
    updated_at                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (date, user_id, team_id, api_key, model, custom_llm_provider, endpoint)
);

CREATE INDEX litellm_dailyuserspend_user_idx ON litellm_dailyuserspend (user_id, date);
CREATE INDEX litellm_dailyuserspend_team_idx ON litellm_dailyuserspend (team_id, date);

-- Settings that may be changed at run time (e.g. model price overrides).
CREATE TABLE litellm_proxy_config (
    param_name  TEXT PRIMARY KEY,
    param_value JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- RPM and TPM token buckets, one row per (scope, id, resource). `tokens` refills continuously
-- at capacity per minute up to capacity; TPM buckets may go negative when actual usage exceeds
-- the estimate taken at admission, which delays later requests.
CREATE TABLE llmlite_rate_bucket (
    scope      TEXT NOT NULL CHECK (scope IN ('key', 'user', 'team')),
    scope_id   TEXT NOT NULL,
    resource   TEXT NOT NULL CHECK (resource IN ('rpm', 'tpm')),
    capacity   BIGINT NOT NULL CHECK (capacity >= 0),
    tokens     NUMERIC NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, scope_id, resource)
);

-- Requests in flight: their budget reservation and parallel-request slot. Settlement deletes
-- the row; a row whose lease has expired belongs to a crashed invocation and no longer counts.
CREATE TABLE llmlite_inflight (
    request_id       TEXT PRIMARY KEY,
    token            TEXT NOT NULL,
    user_id          TEXT,
    team_id          TEXT,
    reserved         NUMERIC NOT NULL CHECK (reserved >= 0),
    estimated_tokens BIGINT NOT NULL DEFAULT 0,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX llmlite_inflight_token_idx ON llmlite_inflight (token, lease_expires_at);
CREATE INDEX llmlite_inflight_user_idx  ON llmlite_inflight (user_id, lease_expires_at)
    WHERE user_id IS NOT NULL;
CREATE INDEX llmlite_inflight_team_idx  ON llmlite_inflight (team_id, lease_expires_at)
    WHERE team_id IS NOT NULL;
CREATE INDEX llmlite_inflight_lease_idx ON llmlite_inflight (lease_expires_at);

-- Audit records S3 refused after retries; the rollup function re-drives them.
CREATE TABLE llmlite_audit_outbox (
    id              BIGSERIAL PRIMARY KEY,
    object_key      TEXT NOT NULL UNIQUE,
    record          JSONB NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX llmlite_audit_outbox_due_idx ON llmlite_audit_outbox (next_attempt_at);
