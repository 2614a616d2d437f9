-- Admission and settlement: one statement each on the chat path (ARCHITECTURE.md §2-3).
--
-- llmlite_admit checks a key, its user and its team, and only if every check passes takes the
-- rate-limit tokens, a parallel-request lease and the worst-case budget reservation. Rows are
-- locked in one order (key, user, team, buckets) so concurrent admissions serialise per key,
-- user and team, across any number of gateway instances, without deadlocks.
--
-- Token buckets refill continuously at capacity per period (60 s for RPM and TPM), up to
-- capacity. TPM takes the prompt estimate at admission; settlement charges the difference to
-- the actual tokens, so a bucket may go negative and delay later requests.

CREATE FUNCTION llmlite_bucket_level(
    p_tokens NUMERIC, p_capacity BIGINT, p_updated TIMESTAMPTZ, p_now TIMESTAMPTZ, p_period NUMERIC
) RETURNS NUMERIC LANGUAGE sql IMMUTABLE AS $$
    SELECT LEAST(p_capacity::numeric,
                 p_tokens + GREATEST(EXTRACT(EPOCH FROM (p_now - p_updated)), 0)
                            * p_capacity / p_period)
$$;

-- Starts a new budget period for every key, user and team whose period has ended; returns how
-- many were reset. Admission does this lazily for the rows it touches; the rollup function
-- calls it for the rest.
CREATE FUNCTION llmlite_reset_budgets(p_now TIMESTAMPTZ) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT := 0;
    m BIGINT;
BEGIN
    UPDATE litellm_verificationtoken SET spend = 0, budget_reset_at = p_now + budget_duration
     WHERE budget_duration IS NOT NULL AND budget_reset_at <= p_now;
    GET DIAGNOSTICS m = ROW_COUNT; n := n + m;
    UPDATE litellm_usertable SET spend = 0, budget_reset_at = p_now + budget_duration
     WHERE budget_duration IS NOT NULL AND budget_reset_at <= p_now;
    GET DIAGNOSTICS m = ROW_COUNT; n := n + m;
    UPDATE litellm_teamtable SET spend = 0, budget_reset_at = p_now + budget_duration
     WHERE budget_duration IS NOT NULL AND budget_reset_at <= p_now;
    GET DIAGNOSTICS m = ROW_COUNT; n := n + m;
    RETURN n;
END
$$;

CREATE TYPE llmlite_admission AS (
    decision        TEXT,     -- ok | not_found | inactive | blocked | expired | model_not_allowed
                              -- | rate_limited | budget_exceeded
    scope           TEXT,     -- key | user | team: which one refused
    detail          TEXT,     -- rpm | tpm | parallel, for rate_limited
    token           TEXT,     -- the key row's token (a rotated key resolves to its successor)
    key_alias       TEXT,
    user_id         TEXT,
    team_id         TEXT,
    key_spend       NUMERIC,
    spend           NUMERIC,  -- the refusing scope's spend, for budget_exceeded
    max_budget      NUMERIC,
    retry_after     NUMERIC,  -- seconds until a token is free, for rate_limited
    rpm_limit       BIGINT,   -- the tightest limits and what remains of them
    rpm_remaining   NUMERIC,
    rpm_reset       NUMERIC,
    tpm_limit       BIGINT,
    tpm_remaining   NUMERIC,
    tpm_reset       NUMERIC,
    key_pii_policy  JSONB,    -- the PII policies the guard applies over the global one
    team_pii_policy JSONB
);

CREATE FUNCTION llmlite_admit(
    p_token      TEXT,
    p_model      TEXT,
    p_request_id TEXT,
    p_now        TIMESTAMPTZ,
    p_estimate   BIGINT,       -- prompt tokens, estimated
    p_reserve    NUMERIC,      -- worst-case cost
    p_lease      INTERVAL,     -- how long a parallel slot and reservation live without settlement
    p_period     NUMERIC       -- bucket refill period in seconds
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
    r.token := k.token; r.key_alias := k.key_alias; r.user_id := k.user_id; r.team_id := k.team_id;
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

    ids     := ARRAY[k.token, u.user_id, t.team_id];
    rpm     := ARRAY[k.rpm_limit, u.rpm_limit, t.rpm_limit];
    tpm     := ARRAY[k.tpm_limit, u.tpm_limit, t.tpm_limit];
    par     := ARRAY[k.max_parallel_requests, u.max_parallel_requests, t.max_parallel_requests];
    budgets := ARRAY[k.max_budget, u.max_budget, t.max_budget];
    spends  := ARRAY[k.spend, u.spend, t.spend];

    -- Models: each of key, user and team must allow it (an empty list allows every model).
    IF NOT (cardinality(k.models) = 0 OR p_model = ANY (k.models)) THEN
        r.decision := 'model_not_allowed'; r.scope := 'key'; RETURN r;
    END IF;
    IF u.user_id IS NOT NULL AND NOT (cardinality(u.models) = 0 OR p_model = ANY (u.models)) THEN
        r.decision := 'model_not_allowed'; r.scope := 'user'; RETURN r;
    END IF;
    IF t.team_id IS NOT NULL AND NOT (cardinality(t.models) = 0 OR p_model = ANY (t.models)) THEN
        r.decision := 'model_not_allowed'; r.scope := 'team'; RETURN r;
    END IF;

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
               AND CASE i WHEN 1 THEN f.token = ids[i] WHEN 2 THEN f.user_id = ids[i]
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
               AND CASE i WHEN 1 THEN f.token = ids[i] WHEN 2 THEN f.user_id = ids[i]
                          ELSE f.team_id = ids[i] END;
            IF spends[i] + reserved + p_reserve > budgets[i] THEN
                r.decision := 'budget_exceeded'; r.scope := scopes[i];
                r.spend := spends[i]; r.max_budget := budgets[i];
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
    INSERT INTO llmlite_inflight (request_id, token, user_id, team_id, reserved, estimated_tokens,
                                  started_at, lease_expires_at)
    VALUES (p_request_id, k.token, u.user_id, t.team_id, p_reserve, p_estimate, p_now, p_now + p_lease);
    r.key_pii_policy := k.pii_policy;
    r.team_pii_policy := t.pii_policy;
    r.decision := 'ok';
    RETURN r;
END
$$;

-- Settles a request: records its spend row (once: a retried settlement is a no-op), swaps the
-- reservation for the actual cost on key, user and team, charges the tokens the estimate
-- missed to the TPM buckets, and releases the lease. Returns the key's spend afterwards.
CREATE FUNCTION llmlite_settle(
    p_request_id   TEXT,
    p_token        TEXT,
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
BEGIN
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
        SELECT spend INTO key_spend FROM litellm_verificationtoken WHERE token = p_token;
        RETURN key_spend;
    END IF;

    DELETE FROM llmlite_inflight WHERE request_id = p_request_id RETURNING estimated_tokens INTO estimated;
    extra := (p_prompt + p_completion) - COALESCE(estimated, 0);

    UPDATE litellm_verificationtoken SET spend = spend + p_cost, last_active = p_end
     WHERE token = p_token RETURNING spend INTO key_spend;
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
           AND ((scope = 'key' AND scope_id = p_token)
             OR (scope = 'user' AND scope_id = p_user_id)
             OR (scope = 'team' AND scope_id = p_team_id));
    END IF;
    RETURN key_spend;
END
$$;
