-- 1-hour prompt caching and Bedrock service tiers, priced and policed (issue 28).
--
-- 1. Keys and teams get `allow_cache_1h` (NULL: allowed) and `allowed_service_tiers` (NULL: the
--    default, `{default,flex}`). Admission refuses a request asking for what either forbids,
--    before it takes anything: `feature_not_allowed`, naming the scope and the setting.
-- 2. Spend rows keep the 1-hour part of their cache writes (`cache_creation_input_tokens` stays
--    the total, as Anthropic's usage has it) and the service tier that served them; the daily
--    rollup keeps the 1-hour writes too.
-- 3. The new arguments need new signatures. `llmlite_admit`, `llmlite_settle_recorded` and
--    `llmlite_settle_batch` gain them; the previous signatures stay, for instances still running
--    the previous code during a deploy, and delegate to the new ones (asking for nothing new),
--    so each function's body is written once.

ALTER TABLE litellm_verificationtoken
    ADD COLUMN allow_cache_1h BOOLEAN,
    ADD COLUMN allowed_service_tiers TEXT[]
        CHECK (allowed_service_tiers <@ ARRAY['default', 'flex', 'priority']::TEXT[]);
ALTER TABLE litellm_teamtable
    ADD COLUMN allow_cache_1h BOOLEAN,
    ADD COLUMN allowed_service_tiers TEXT[]
        CHECK (allowed_service_tiers <@ ARRAY['default', 'flex', 'priority']::TEXT[]);

ALTER TABLE litellm_spend
    ADD COLUMN cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN service_tier TEXT;
ALTER TABLE litellm_dailyuserspend
    ADD COLUMN cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0;

-- The tiers a key or team may use when it names none.
CREATE FUNCTION llmlite_default_tiers() RETURNS TEXT[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['default', 'flex']::TEXT[]
$$;

-- Admission as before (20261130000001), and the features the request asks for checked against
-- key and team after its model, before anything is taken.
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
    p_period        NUMERIC,      -- bucket refill period in seconds
    p_cache_1h      BOOLEAN,      -- the request writes the prompt cache for an hour
    p_service_tier  TEXT          -- the Bedrock service tier it asks for (NULL: none named)
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
    -- Paid Bedrock features: each of key and team must allow what the request asks for (the
    -- narrower wins). NULL is the default: 1-hour caching allowed, tiers default and flex.
    IF p_cache_1h THEN
        IF k.allow_cache_1h IS FALSE THEN
            r.decision := 'feature_not_allowed'; r.scope := 'key'; r.detail := 'allow_cache_1h';
            RETURN r;
        END IF;
        IF t.team_id IS NOT NULL AND t.allow_cache_1h IS FALSE THEN
            r.decision := 'feature_not_allowed'; r.scope := 'team'; r.detail := 'allow_cache_1h';
            RETURN r;
        END IF;
    END IF;
    IF p_service_tier IS NOT NULL THEN
        IF NOT p_service_tier = ANY (COALESCE(k.allowed_service_tiers, llmlite_default_tiers())) THEN
            r.decision := 'feature_not_allowed'; r.scope := 'key'; r.detail := 'allowed_service_tiers';
            RETURN r;
        END IF;
        IF t.team_id IS NOT NULL
           AND NOT p_service_tier = ANY (COALESCE(t.allowed_service_tiers, llmlite_default_tiers())) THEN
            r.decision := 'feature_not_allowed'; r.scope := 'team'; r.detail := 'allowed_service_tiers';
            RETURN r;
        END IF;
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

-- The previous signature: a request that asks for neither feature.
CREATE OR REPLACE FUNCTION llmlite_admit(
    p_token TEXT, p_chain TEXT[], p_reserves NUMERIC[], p_model_id TEXT, p_request_id TEXT,
    p_now TIMESTAMPTZ, p_estimate BIGINT, p_estimate_cost NUMERIC, p_lease INTERVAL,
    p_period NUMERIC
) RETURNS llmlite_admission LANGUAGE sql AS $$
    SELECT * FROM llmlite_admit(p_token, p_chain, p_reserves, p_model_id, p_request_id, p_now,
                                p_estimate, p_estimate_cost, p_lease, p_period, false, NULL)
$$;

-- Settlement as before (20261207000001), with the detail the new columns keep.
CREATE FUNCTION llmlite_settle_recorded(
    p_call_type    TEXT,
    p_presented    TEXT,         -- the hash the client sent (NULL: not known)
    p_request_id   TEXT,
    p_key_id       BIGINT,       -- NULL for the master key
    p_token        TEXT,         -- the key's hash at admission: the key charged
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
    p_metadata     JSONB,
    p_audit        TEXT,         -- the audit record (NULL: the caller writes its own)
    p_detail       JSONB         -- what the gateway measured beyond the columns above:
                                 -- {"cache_write_1h": n, "service_tier": "..."} (NULL: none)
) RETURNS TABLE (key_spend NUMERIC, queued BIGINT) LANGUAGE plpgsql AS $$
DECLARE
    estimated BIGINT;
    extra     BIGINT;
    key_token TEXT;
BEGIN
    queued := NULL;
    -- The lease first: a rollup charging it as lost (which also takes it first) and this
    -- settlement then serialise on it instead of deadlocking on the spend row.
    DELETE FROM llmlite_inflight WHERE request_id = p_request_id RETURNING estimated_tokens INTO estimated;
    INSERT INTO litellm_spend (request_id, call_type, api_key, presented_key_hash, key_alias,
                               user_id, team_id, end_user, model, model_id, prompt_tokens,
                               completion_tokens, cache_read_input_tokens,
                               cache_creation_input_tokens, cache_creation_1h_input_tokens,
                               service_tier, total_tokens, spend, start_time, end_time,
                               request_duration_ms, status, error_type, metadata)
    VALUES (p_request_id, COALESCE(p_call_type, 'acompletion'), p_token, p_presented,
            p_key_alias, p_user_id, p_team_id, p_end_user, p_model, p_model_id, p_prompt,
            p_completion, p_cache_read, p_cache_write,
            COALESCE((p_detail ->> 'cache_write_1h')::bigint, 0), p_detail ->> 'service_tier',
            p_prompt + p_completion, p_cost, p_start, p_end,
            GREATEST((EXTRACT(EPOCH FROM (p_end - p_start)) * 1000)::bigint, 0), p_status,
            p_error_type, COALESCE(p_metadata, '{}'::jsonb))
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        -- Settled before (a replay): its record was queued then.
        SELECT v.spend INTO key_spend FROM litellm_verificationtoken v WHERE v.key_id = p_key_id;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_audit IS NOT NULL THEN
        INSERT INTO llmlite_audit_queue (at, record) VALUES (p_start, p_audit)
        RETURNING id INTO queued;
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
    RETURN NEXT;
END
$$;

-- The previous signature: nothing beyond the columns it had.
CREATE OR REPLACE FUNCTION llmlite_settle_recorded(
    p_call_type TEXT, p_presented TEXT, p_request_id TEXT, p_key_id BIGINT, p_token TEXT,
    p_key_alias TEXT, p_user_id TEXT, p_team_id TEXT, p_end_user TEXT, p_model TEXT,
    p_model_id TEXT, p_prompt BIGINT, p_completion BIGINT, p_cache_read BIGINT,
    p_cache_write BIGINT, p_cost NUMERIC, p_start TIMESTAMPTZ, p_end TIMESTAMPTZ, p_status TEXT,
    p_error_type TEXT, p_metadata JSONB, p_audit TEXT
) RETURNS TABLE (key_spend NUMERIC, queued BIGINT) LANGUAGE sql AS $$
    SELECT * FROM llmlite_settle_recorded(p_call_type, p_presented, p_request_id, p_key_id,
                                          p_token, p_key_alias, p_user_id, p_team_id,
                                          p_end_user, p_model, p_model_id, p_prompt,
                                          p_completion, p_cache_read, p_cache_write, p_cost,
                                          p_start, p_end, p_status, p_error_type, p_metadata,
                                          p_audit, NULL)
$$;

-- Group commit as before (20261207000002), with each request's detail.
CREATE FUNCTION llmlite_settle_batch(
    p_call_type    TEXT[],
    p_presented    TEXT[],
    p_request_id   TEXT[],
    p_key_id       BIGINT[],
    p_token        TEXT[],
    p_key_alias    TEXT[],
    p_user_id      TEXT[],
    p_team_id      TEXT[],
    p_end_user     TEXT[],
    p_model        TEXT[],
    p_model_id     TEXT[],
    p_prompt       BIGINT[],
    p_completion   BIGINT[],
    p_cache_read   BIGINT[],
    p_cache_write  BIGINT[],
    p_cost         NUMERIC[],
    p_start        TIMESTAMPTZ[],
    p_end          TIMESTAMPTZ[],
    p_status       TEXT[],
    p_error_type   TEXT[],
    p_metadata     JSONB[],
    p_audit        TEXT[],
    p_detail       JSONB[]
) RETURNS TABLE (settled_request TEXT, key_spend NUMERIC, queued BIGINT) LANGUAGE plpgsql AS $$
DECLARE
    n INT := COALESCE(cardinality(p_request_id), 0);
    i INT;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_call_type) IS DISTINCT FROM n OR cardinality(p_presented) IS DISTINCT FROM n
       OR cardinality(p_key_id) IS DISTINCT FROM n OR cardinality(p_token) IS DISTINCT FROM n
       OR cardinality(p_key_alias) IS DISTINCT FROM n OR cardinality(p_user_id) IS DISTINCT FROM n
       OR cardinality(p_team_id) IS DISTINCT FROM n OR cardinality(p_end_user) IS DISTINCT FROM n
       OR cardinality(p_model) IS DISTINCT FROM n OR cardinality(p_model_id) IS DISTINCT FROM n
       OR cardinality(p_prompt) IS DISTINCT FROM n OR cardinality(p_completion) IS DISTINCT FROM n
       OR cardinality(p_cache_read) IS DISTINCT FROM n
       OR cardinality(p_cache_write) IS DISTINCT FROM n OR cardinality(p_cost) IS DISTINCT FROM n
       OR cardinality(p_start) IS DISTINCT FROM n OR cardinality(p_end) IS DISTINCT FROM n
       OR cardinality(p_status) IS DISTINCT FROM n OR cardinality(p_error_type) IS DISTINCT FROM n
       OR cardinality(p_metadata) IS DISTINCT FROM n OR cardinality(p_audit) IS DISTINCT FROM n
       OR cardinality(p_detail) IS DISTINCT FROM n
    THEN
        RAISE EXCEPTION 'llmlite_settle_batch: % requests but arrays of other lengths', n
            USING ERRCODE = '22023';
    END IF;

    PERFORM 1 FROM llmlite_inflight f WHERE f.request_id = ANY (p_request_id)
      ORDER BY f.request_id FOR UPDATE;
    PERFORM 1 FROM litellm_verificationtoken v WHERE v.key_id = ANY (p_key_id)
      ORDER BY v.key_id FOR UPDATE;
    PERFORM 1 FROM litellm_usertable u WHERE u.user_id = ANY (p_user_id)
      ORDER BY u.user_id FOR UPDATE;
    PERFORM 1 FROM litellm_teamtable t WHERE t.team_id = ANY (p_team_id)
      ORDER BY t.team_id FOR UPDATE;

    FOR i IN 1..n LOOP
        settled_request := p_request_id[i];
        SELECT s.key_spend, s.queued INTO key_spend, queued
          FROM llmlite_settle_recorded(p_call_type[i], p_presented[i], p_request_id[i],
                                       p_key_id[i], p_token[i], p_key_alias[i], p_user_id[i],
                                       p_team_id[i], p_end_user[i], p_model[i], p_model_id[i],
                                       p_prompt[i], p_completion[i], p_cache_read[i],
                                       p_cache_write[i], p_cost[i], p_start[i], p_end[i],
                                       p_status[i], p_error_type[i], p_metadata[i],
                                       p_audit[i], p_detail[i]) s;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The previous signature: no detail for any request.
CREATE OR REPLACE FUNCTION llmlite_settle_batch(
    p_call_type TEXT[], p_presented TEXT[], p_request_id TEXT[], p_key_id BIGINT[],
    p_token TEXT[], p_key_alias TEXT[], p_user_id TEXT[], p_team_id TEXT[], p_end_user TEXT[],
    p_model TEXT[], p_model_id TEXT[], p_prompt BIGINT[], p_completion BIGINT[],
    p_cache_read BIGINT[], p_cache_write BIGINT[], p_cost NUMERIC[], p_start TIMESTAMPTZ[],
    p_end TIMESTAMPTZ[], p_status TEXT[], p_error_type TEXT[], p_metadata JSONB[],
    p_audit TEXT[]
) RETURNS TABLE (settled_request TEXT, key_spend NUMERIC, queued BIGINT) LANGUAGE sql AS $$
    SELECT * FROM llmlite_settle_batch(p_call_type, p_presented, p_request_id, p_key_id, p_token,
                                       p_key_alias, p_user_id, p_team_id, p_end_user, p_model,
                                       p_model_id, p_prompt, p_completion, p_cache_read,
                                       p_cache_write, p_cost, p_start, p_end, p_status,
                                       p_error_type, p_metadata, p_audit,
                                       array_fill(NULL::jsonb, ARRAY[COALESCE(cardinality(p_request_id), 0)]))
$$;
