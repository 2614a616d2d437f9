-- Every admitted request pays exactly once (issue 13).
--
-- 1. Keys get an immutable `key_id`. Regenerating a key changes its token in place, so a
--    request admitted under the old token must still find its key when it settles: leases,
--    reservations and settlement key on `key_id`, never on the token.
-- 2. Spend rows record how a request ended: `success`, `failure`, `client_closed`,
--    `upstream_cut`, `panic`, `deadline`, or `lost` (a lease that expired unsettled: the
--    instance died; the rollup charges its prompt estimate).
-- 3. Admission takes the whole model chain (the model asked for, then its fallbacks) with each
--    model's worst-case cost, and answers the part of it the key, user and team all allow. The
--    reservation is the worst case over that part only.
-- 4. Leases carry what the rollup needs to charge them if they are never settled.

ALTER TABLE litellm_verificationtoken
    ADD COLUMN key_id BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE litellm_verificationtoken
    ADD CONSTRAINT litellm_verificationtoken_key_id_key UNIQUE (key_id);

ALTER TABLE litellm_spend DROP CONSTRAINT litellm_spend_status_check;
ALTER TABLE litellm_spend ADD CONSTRAINT litellm_spend_status_check
    CHECK (status IN ('success', 'failure', 'client_closed', 'upstream_cut', 'panic', 'deadline',
                      'lost'));

ALTER TABLE llmlite_inflight
    ADD COLUMN key_id        BIGINT,     -- NULL only for rows leased before this migration
    ADD COLUMN key_alias     TEXT,
    ADD COLUMN model         TEXT,
    ADD COLUMN model_id      TEXT,
    ADD COLUMN estimate_cost NUMERIC NOT NULL DEFAULT 0 CHECK (estimate_cost >= 0);
UPDATE llmlite_inflight f SET key_id = k.key_id, key_alias = k.key_alias
  FROM litellm_verificationtoken k WHERE k.token = f.token;
CREATE INDEX llmlite_inflight_key_idx ON llmlite_inflight (key_id, lease_expires_at);

DROP FUNCTION llmlite_admit(TEXT, TEXT, TEXT, TIMESTAMPTZ, BIGINT, NUMERIC, INTERVAL, NUMERIC);
DROP FUNCTION llmlite_settle(TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, BIGINT,
                             BIGINT, BIGINT, NUMERIC, TIMESTAMPTZ, TIMESTAMPTZ, TEXT, TEXT, JSONB);
DROP TYPE llmlite_admission;

CREATE TYPE llmlite_admission AS (
    decision        TEXT,     -- ok | not_found | inactive | blocked | expired | model_not_allowed
                              -- | rate_limited | budget_exceeded
    scope           TEXT,     -- key | user | team: which one refused
    detail          TEXT,     -- rpm | tpm | parallel, for rate_limited
    key_id          BIGINT,   -- the key's immutable id: settlement charges it
    token           TEXT,     -- the key row's token (a rotated key resolves to its successor)
    key_alias       TEXT,
    user_id         TEXT,
    team_id         TEXT,
    key_spend       NUMERIC,
    spend           NUMERIC,  -- the refusing scope's spend, for budget_exceeded
    max_budget      NUMERIC,
    reserve         NUMERIC,  -- the reservation taken (or, for budget_exceeded, that did not fit)
    retry_after     NUMERIC,  -- seconds until a token is free, for rate_limited
    rpm_limit       BIGINT,   -- the tightest limits and what remains of them
    rpm_remaining   NUMERIC,
    rpm_reset       NUMERIC,
    tpm_limit       BIGINT,
    tpm_remaining   NUMERIC,
    tpm_reset       NUMERIC,
    key_pii_policy  JSONB,    -- the PII policies the guard applies over the global one
    team_pii_policy JSONB,
    allowed         TEXT[]    -- the chain's models every scope allows, in chain order
);

-- Whether a scope's model list allows `p_model` (an empty list allows every model).
CREATE FUNCTION llmlite_allows(p_models TEXT[], p_model TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_models IS NULL OR cardinality(p_models) = 0 OR p_model = ANY (p_models)
$$;

CREATE FUNCTION llmlite_admit(
    p_token         TEXT,
    p_chain         TEXT[],       -- the model asked for, then its fallbacks
    p_reserves      NUMERIC[],    -- each chain model's worst-case cost
    p_model_id      TEXT,         -- the Bedrock ID of the model asked for, for the lease
    p_request_id    TEXT,
    p_now           TIMESTAMPTZ,
    p_estimate      BIGINT,       -- prompt tokens, estimated
    p_estimate_cost NUMERIC,      -- the estimate at the model's input price: what a lost
                                  -- lease is charged
    p_lease         INTERVAL,     -- how long a parallel slot and reservation live unsettled
    p_period        NUMERIC       -- bucket refill period in seconds
) RETURNS llmlite_admission LANGUAGE plpgsql AS $$
DECLARE
    r        llmlite_admission;
    k        litellm_verificationtoken%ROWTYPE;
    u        litellm_usertable%ROWTYPE;
    t        litellm_teamtable%ROWTYPE;
    grace    TIMESTAMPTZ;
    scopes   TEXT[] := ARRAY['key', 'user', 'team'];
    ids      TEXT[];
    rpm      BIGINT[];
    tpm      BIGINT[];
    par      INTEGER[];
    budgets  NUMERIC[];
    spends   NUMERIC[];
    rpm_lvl  NUMERIC[] := ARRAY[NULL, NULL, NULL]::NUMERIC[];
    tpm_lvl  NUMERIC[] := ARRAY[NULL, NULL, NULL]::NUMERIC[];
    level    NUMERIC;
    need     NUMERIC;
    busy     BIGINT;
    reserved NUMERIC;
    reserve  NUMERIC := 0;
    asked    TEXT := p_chain[1];
    i        INT;
BEGIN
    -- The key, or the key a rotated hash now points at during its grace period.
    SELECT * INTO k FROM litellm_verificationtoken WHERE token = p_token FOR UPDATE;
    IF NOT FOUND THEN
        SELECT d.revoke_at INTO grace FROM llmlite_deprecated_token d WHERE d.token = p_token;
        IF FOUND THEN
            SELECT * INTO k FROM litellm_verificationtoken v
             WHERE v.token = (SELECT active_token FROM llmlite_deprecated_token WHERE token = p_token)
             FOR UPDATE;
        END IF;
    END IF;
    IF k.token IS NULL THEN
        r.decision := 'not_found'; RETURN r;
    END IF;
    r.key_id := k.key_id; r.token := k.token; r.key_alias := k.key_alias;
    r.user_id := k.user_id; r.team_id := k.team_id;
    IF NOT k.is_active OR (grace IS NOT NULL AND grace <= p_now) THEN
        r.decision := 'inactive'; RETURN r;
    END IF;
    IF k.blocked THEN r.decision := 'blocked'; r.scope := 'key'; RETURN r; END IF;
    IF k.expires IS NOT NULL AND k.expires <= p_now THEN r.decision := 'expired'; RETURN r; END IF;

    IF k.user_id IS NOT NULL THEN
        SELECT * INTO u FROM litellm_usertable WHERE user_id = k.user_id FOR UPDATE;
    END IF;
    IF k.team_id IS NOT NULL THEN
        SELECT * INTO t FROM litellm_teamtable WHERE team_id = k.team_id FOR UPDATE;
        IF t.blocked THEN r.decision := 'blocked'; r.scope := 'team'; RETURN r; END IF;
    END IF;

    -- Budget periods that have ended start again (lazily, for the rows this request touches).
    IF k.budget_duration IS NOT NULL AND k.budget_reset_at <= p_now THEN
        UPDATE litellm_verificationtoken SET spend = 0, budget_reset_at = p_now + budget_duration
         WHERE token = k.token RETURNING * INTO k;
    END IF;
    IF u.user_id IS NOT NULL AND u.budget_duration IS NOT NULL AND u.budget_reset_at <= p_now THEN
        UPDATE litellm_usertable SET spend = 0, budget_reset_at = p_now + budget_duration
         WHERE user_id = u.user_id RETURNING * INTO u;
    END IF;
    IF t.team_id IS NOT NULL AND t.budget_duration IS NOT NULL AND t.budget_reset_at <= p_now THEN
        UPDATE litellm_teamtable SET spend = 0, budget_reset_at = p_now + budget_duration
         WHERE team_id = t.team_id RETURNING * INTO t;
    END IF;
    r.key_spend := k.spend;

    -- Models: each of key, user and team must allow the model asked for; fallbacks that any of
    -- them does not allow are dropped from the chain, and so from the reservation.
    IF NOT llmlite_allows(k.models, asked) THEN
        r.decision := 'model_not_allowed'; r.scope := 'key'; RETURN r;
    END IF;
    IF u.user_id IS NOT NULL AND NOT llmlite_allows(u.models, asked) THEN
        r.decision := 'model_not_allowed'; r.scope := 'user'; RETURN r;
    END IF;
    IF t.team_id IS NOT NULL AND NOT llmlite_allows(t.models, asked) THEN
        r.decision := 'model_not_allowed'; r.scope := 'team'; RETURN r;
    END IF;
    r.allowed := ARRAY[]::TEXT[];
    FOR i IN 1..cardinality(p_chain) LOOP
        IF llmlite_allows(k.models, p_chain[i]) AND llmlite_allows(u.models, p_chain[i])
           AND llmlite_allows(t.models, p_chain[i]) THEN
            r.allowed := r.allowed || p_chain[i];
            reserve := GREATEST(reserve, p_reserves[i]);
        END IF;
    END LOOP;
    r.reserve := reserve;

    -- Key-scoped leases count by the immutable key id (a rotation in flight keeps them);
    -- buckets by the key's token, as before.
    ids     := ARRAY[k.token, u.user_id, t.team_id];
    rpm     := ARRAY[k.rpm_limit, u.rpm_limit, t.rpm_limit];
    tpm     := ARRAY[k.tpm_limit, u.tpm_limit, t.tpm_limit];
    par     := ARRAY[k.max_parallel_requests, u.max_parallel_requests, t.max_parallel_requests];
    budgets := ARRAY[k.max_budget, u.max_budget, t.max_budget];
    spends  := ARRAY[k.spend, u.spend, t.spend];

    -- Check everything before taking anything: a refusal leaves no trace.
    FOR i IN 1..3 LOOP
        CONTINUE WHEN ids[i] IS NULL;
        IF rpm[i] IS NOT NULL THEN
            SELECT llmlite_bucket_level(b.tokens, rpm[i], b.updated_at, p_now, p_period) INTO level
              FROM llmlite_rate_bucket b
             WHERE b.scope = scopes[i] AND b.scope_id = ids[i] AND b.resource = 'rpm' FOR UPDATE;
            level := COALESCE(level, rpm[i]);
            rpm_lvl[i] := level;
            IF level < 1 THEN
                r.decision := 'rate_limited'; r.scope := scopes[i]; r.detail := 'rpm';
                r.retry_after := CASE WHEN rpm[i] = 0 THEN p_period
                                      ELSE (1 - level) * p_period / rpm[i] END;
                r.rpm_limit := rpm[i]; r.rpm_remaining := 0; r.rpm_reset := r.retry_after;
                RETURN r;
            END IF;
        END IF;
        IF tpm[i] IS NOT NULL THEN
            SELECT llmlite_bucket_level(b.tokens, tpm[i], b.updated_at, p_now, p_period) INTO level
              FROM llmlite_rate_bucket b
             WHERE b.scope = scopes[i] AND b.scope_id = ids[i] AND b.resource = 'tpm' FOR UPDATE;
            level := COALESCE(level, tpm[i]);
            tpm_lvl[i] := level;
            -- A prompt larger than the whole bucket waits for a full bucket, then runs.
            need := LEAST(p_estimate, tpm[i]);
            IF level < need OR level <= 0 THEN
                r.decision := 'rate_limited'; r.scope := scopes[i]; r.detail := 'tpm';
                r.retry_after := CASE WHEN tpm[i] = 0 THEN p_period
                                      ELSE (GREATEST(need, 1) - level) * p_period / tpm[i] END;
                r.tpm_limit := tpm[i]; r.tpm_remaining := GREATEST(level, 0); r.tpm_reset := r.retry_after;
                RETURN r;
            END IF;
        END IF;
        IF par[i] IS NOT NULL THEN
            SELECT count(*) INTO busy FROM llmlite_inflight f
             WHERE f.lease_expires_at > p_now
               AND CASE i WHEN 1 THEN f.key_id = k.key_id WHEN 2 THEN f.user_id = ids[i]
                          ELSE f.team_id = ids[i] END;
            IF busy >= par[i] THEN
                r.decision := 'rate_limited'; r.scope := scopes[i]; r.detail := 'parallel';
                r.retry_after := 1;
                RETURN r;
            END IF;
        END IF;
        IF budgets[i] IS NOT NULL THEN
            SELECT COALESCE(sum(f.reserved), 0) INTO reserved FROM llmlite_inflight f
             WHERE f.lease_expires_at > p_now
               AND CASE i WHEN 1 THEN f.key_id = k.key_id WHEN 2 THEN f.user_id = ids[i]
                          ELSE f.team_id = ids[i] END;
            IF spends[i] + reserved + reserve > budgets[i] THEN
                r.decision := 'budget_exceeded'; r.scope := scopes[i];
                r.spend := spends[i] + reserved; r.max_budget := budgets[i];
                RETURN r;
            END IF;
        END IF;
    END LOOP;

    -- Admitted: take one request and the prompt estimate from every bucket, a lease, and the
    -- reservation.
    FOR i IN 1..3 LOOP
        CONTINUE WHEN ids[i] IS NULL;
        IF rpm[i] IS NOT NULL THEN
            INSERT INTO llmlite_rate_bucket AS b (scope, scope_id, resource, capacity, tokens, updated_at)
            VALUES (scopes[i], ids[i], 'rpm', rpm[i], rpm_lvl[i] - 1, p_now)
            ON CONFLICT (scope, scope_id, resource)
            DO UPDATE SET capacity = EXCLUDED.capacity, tokens = EXCLUDED.tokens, updated_at = p_now;
            IF r.rpm_remaining IS NULL OR rpm_lvl[i] - 1 < r.rpm_remaining THEN
                r.rpm_limit := rpm[i]; r.rpm_remaining := rpm_lvl[i] - 1;
                r.rpm_reset := (rpm[i] - (rpm_lvl[i] - 1)) * p_period / GREATEST(rpm[i], 1);
            END IF;
        END IF;
        IF tpm[i] IS NOT NULL THEN
            INSERT INTO llmlite_rate_bucket AS b (scope, scope_id, resource, capacity, tokens, updated_at)
            VALUES (scopes[i], ids[i], 'tpm', tpm[i], tpm_lvl[i] - p_estimate, p_now)
            ON CONFLICT (scope, scope_id, resource)
            DO UPDATE SET capacity = EXCLUDED.capacity, tokens = EXCLUDED.tokens, updated_at = p_now;
            IF r.tpm_remaining IS NULL OR tpm_lvl[i] - p_estimate < r.tpm_remaining THEN
                r.tpm_limit := tpm[i]; r.tpm_remaining := tpm_lvl[i] - p_estimate;
                r.tpm_reset := (tpm[i] - (tpm_lvl[i] - p_estimate)) * p_period / GREATEST(tpm[i], 1);
            END IF;
        END IF;
    END LOOP;
    INSERT INTO llmlite_inflight (request_id, token, key_id, key_alias, user_id, team_id, model,
                                  model_id, reserved, estimated_tokens, estimate_cost, started_at,
                                  lease_expires_at)
    VALUES (p_request_id, k.token, k.key_id, k.key_alias, u.user_id, t.team_id, asked, p_model_id,
            reserve, p_estimate, p_estimate_cost, p_now, p_now + p_lease);
    r.key_pii_policy := k.pii_policy;
    r.team_pii_policy := t.pii_policy;
    r.decision := 'ok';
    RETURN r;
END
$$;

-- Settles a request: records its spend row (once: a replayed settlement is a no-op), swaps the
-- reservation for the actual cost on key (by id), user and team, charges the tokens the
-- estimate missed to the TPM buckets, and releases the lease. Returns the key's spend
-- afterwards. Locks in admission's order: key, user, team, buckets.
CREATE FUNCTION llmlite_settle(
    p_request_id   TEXT,
    p_key_id       BIGINT,       -- NULL for the master key
    p_token        TEXT,         -- the key's hash at admission, for the spend row
    p_key_alias    TEXT,
    p_user_id      TEXT,
    p_team_id      TEXT,
    p_end_user     TEXT,
    p_model        TEXT,
    p_model_id     TEXT,
    p_prompt       BIGINT,
    p_completion   BIGINT,
    p_cache_read   BIGINT,
    p_cache_write  BIGINT,
    p_cost         NUMERIC,
    p_start        TIMESTAMPTZ,
    p_end          TIMESTAMPTZ,
    p_status       TEXT,
    p_error_type   TEXT,
    p_metadata     JSONB
) RETURNS NUMERIC LANGUAGE plpgsql AS $$
DECLARE
    estimated BIGINT;
    extra     BIGINT;
    key_spend NUMERIC;
    key_token TEXT;
BEGIN
    -- The lease first: a rollup charging it as lost (which also takes it first) and this
    -- settlement then serialise on it instead of deadlocking on the spend row.
    DELETE FROM llmlite_inflight WHERE request_id = p_request_id RETURNING estimated_tokens INTO estimated;
    INSERT INTO litellm_spend (request_id, call_type, api_key, key_alias, user_id, team_id, end_user,
                               model, model_id, prompt_tokens, completion_tokens,
                               cache_read_input_tokens, cache_creation_input_tokens, total_tokens,
                               spend, start_time, end_time, request_duration_ms, status, error_type,
                               metadata)
    VALUES (p_request_id, 'acompletion', p_token, p_key_alias, p_user_id, p_team_id, p_end_user,
            p_model, p_model_id, p_prompt, p_completion, p_cache_read, p_cache_write,
            p_prompt + p_completion, p_cost, p_start, p_end,
            GREATEST((EXTRACT(EPOCH FROM (p_end - p_start)) * 1000)::bigint, 0), p_status,
            p_error_type, COALESCE(p_metadata, '{}'::jsonb))
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT spend INTO key_spend FROM litellm_verificationtoken WHERE key_id = p_key_id;
        RETURN key_spend;
    END IF;

    extra := (p_prompt + p_completion) - COALESCE(estimated, 0);

    UPDATE litellm_verificationtoken v SET spend = v.spend + p_cost, last_active = p_end
     WHERE v.key_id = p_key_id RETURNING v.spend, v.token INTO key_spend, key_token;
    IF p_user_id IS NOT NULL THEN
        UPDATE litellm_usertable SET spend = spend + p_cost WHERE user_id = p_user_id;
    END IF;
    IF p_team_id IS NOT NULL THEN
        UPDATE litellm_teamtable SET spend = spend + p_cost WHERE team_id = p_team_id;
    END IF;
    -- A failure settles at zero tokens, which hands the estimate back.
    IF extra <> 0 THEN
        UPDATE llmlite_rate_bucket SET tokens = tokens - extra
         WHERE resource = 'tpm'
           AND ((scope = 'key' AND scope_id = COALESCE(key_token, p_token))
             OR (scope = 'user' AND scope_id = p_user_id)
             OR (scope = 'team' AND scope_id = p_team_id));
    END IF;
    RETURN key_spend;
END
$$;

-- Charges every lease that expired unsettled (its instance crashed or was killed) at its
-- prompt estimate, with status `lost`, and releases it. Each lease is claimed with SKIP LOCKED
-- so concurrent rollups charge it once; locks follow admission's order (key, user, team).
-- Returns how many were charged.
CREATE FUNCTION llmlite_charge_lost_leases(p_now TIMESTAMPTZ) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    f llmlite_inflight%ROWTYPE;
    n BIGINT := 0;
BEGIN
    FOR f IN SELECT * FROM llmlite_inflight WHERE lease_expires_at <= p_now
             ORDER BY lease_expires_at FOR UPDATE SKIP LOCKED LOOP
        DELETE FROM llmlite_inflight WHERE request_id = f.request_id;
        INSERT INTO litellm_spend (request_id, call_type, api_key, key_alias, user_id, team_id,
                                   model, model_id, prompt_tokens, total_tokens, spend,
                                   start_time, end_time, request_duration_ms, status, error_type)
        VALUES (f.request_id, 'acompletion', f.token, f.key_alias, f.user_id, f.team_id,
                COALESCE(f.model, 'unknown'), f.model_id, f.estimated_tokens, f.estimated_tokens,
                f.estimate_cost, f.started_at, f.lease_expires_at,
                GREATEST((EXTRACT(EPOCH FROM (f.lease_expires_at - f.started_at)) * 1000)::bigint, 0),
                'lost', 'lease_expired')
        ON CONFLICT (request_id) DO NOTHING;
        CONTINUE WHEN NOT FOUND;  -- settled after all (the row was only left behind)
        UPDATE litellm_verificationtoken SET spend = spend + f.estimate_cost
         WHERE key_id = f.key_id OR (f.key_id IS NULL AND token = f.token);
        IF f.user_id IS NOT NULL THEN
            UPDATE litellm_usertable SET spend = spend + f.estimate_cost WHERE user_id = f.user_id;
        END IF;
        IF f.team_id IS NOT NULL THEN
            UPDATE litellm_teamtable SET spend = spend + f.estimate_cost WHERE team_id = f.team_id;
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
