-- Key governance (issue 18).
--
-- 1. Spend rows carry the hash the client presented (`presented_key_hash`) beside the key they
--    are charged to (`api_key`). They differ only during a rotation grace period: a request
--    with the old key is charged to the row's current hash and shows the old one as presented.
--    NULL on rows written before this migration, by instances still running the previous code
--    during a deploy, and on leases charged as lost (their instance died before it knew more).
-- 2. Keys record when their secret was last rotated (`last_rotation_at`, NULL: never), so the
--    rotation report measures a key's age from its newest secret.
-- 3. `tier` may be `none`: a key created deliberately without the default tier's limits.
-- 4. `llmlite_settle_presented` settles with the presented hash and the call type in the one
--    INSERT. `llmlite_settle` and `llmlite_settle_as` keep their signatures and behaviour for
--    instances still running the previous code during a deploy; they now delegate to it.

ALTER TABLE litellm_spend ADD COLUMN presented_key_hash TEXT
    CHECK (presented_key_hash ~ '^[0-9a-f]{64}$');
-- Uses of an old key during a grace period, found by the hash the client presented.
CREATE INDEX litellm_spend_presented_idx ON litellm_spend (presented_key_hash)
    WHERE presented_key_hash IS NOT NULL AND presented_key_hash <> api_key;

ALTER TABLE litellm_verificationtoken ADD COLUMN last_rotation_at TIMESTAMPTZ;

ALTER TABLE litellm_verificationtoken DROP CONSTRAINT litellm_verificationtoken_tier_check;
ALTER TABLE litellm_verificationtoken ADD CONSTRAINT litellm_verificationtoken_tier_check
    CHECK (tier IN ('standard', 'admin', 'none'));

-- llmlite_settle's work (see 20261130000001_settlement.sql), with the call type and the
-- presented hash written by the INSERT itself: one statement per spend row, no follow-up UPDATE.
CREATE FUNCTION llmlite_settle_presented(
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
    INSERT INTO litellm_spend (request_id, call_type, api_key, presented_key_hash, key_alias,
                               user_id, team_id, end_user, model, model_id, prompt_tokens,
                               completion_tokens, cache_read_input_tokens,
                               cache_creation_input_tokens, total_tokens, spend, start_time,
                               end_time, request_duration_ms, status, error_type, metadata)
    VALUES (p_request_id, COALESCE(p_call_type, 'acompletion'), p_token, p_presented,
            p_key_alias, p_user_id, p_team_id, p_end_user, p_model, p_model_id, p_prompt,
            p_completion, p_cache_read, p_cache_write, p_prompt + p_completion, p_cost, p_start,
            p_end, GREATEST((EXTRACT(EPOCH FROM (p_end - p_start)) * 1000)::bigint, 0), p_status,
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

-- The previous entry points, for instances still running the previous code during a deploy:
-- same signatures, same rows (the presented hash unknown), one implementation.
CREATE OR REPLACE FUNCTION llmlite_settle(
    p_request_id TEXT, p_key_id BIGINT, p_token TEXT, p_key_alias TEXT, p_user_id TEXT,
    p_team_id TEXT, p_end_user TEXT, p_model TEXT, p_model_id TEXT, p_prompt BIGINT,
    p_completion BIGINT, p_cache_read BIGINT, p_cache_write BIGINT, p_cost NUMERIC,
    p_start TIMESTAMPTZ, p_end TIMESTAMPTZ, p_status TEXT, p_error_type TEXT, p_metadata JSONB
) RETURNS NUMERIC LANGUAGE sql AS $$
    SELECT llmlite_settle_presented('acompletion', NULL, p_request_id, p_key_id, p_token,
                                    p_key_alias, p_user_id, p_team_id, p_end_user, p_model,
                                    p_model_id, p_prompt, p_completion, p_cache_read,
                                    p_cache_write, p_cost, p_start, p_end, p_status,
                                    p_error_type, p_metadata)
$$;

CREATE OR REPLACE FUNCTION llmlite_settle_as(
    p_call_type TEXT, p_request_id TEXT, p_key_id BIGINT, p_token TEXT, p_key_alias TEXT,
    p_user_id TEXT, p_team_id TEXT, p_end_user TEXT, p_model TEXT, p_model_id TEXT,
    p_prompt BIGINT, p_completion BIGINT, p_cache_read BIGINT, p_cache_write BIGINT,
    p_cost NUMERIC, p_start TIMESTAMPTZ, p_end TIMESTAMPTZ, p_status TEXT, p_error_type TEXT,
    p_metadata JSONB
) RETURNS NUMERIC LANGUAGE sql AS $$
    SELECT llmlite_settle_presented(p_call_type, NULL, p_request_id, p_key_id, p_token,
                                    p_key_alias, p_user_id, p_team_id, p_end_user, p_model,
                                    p_model_id, p_prompt, p_completion, p_cache_read,
                                    p_cache_write, p_cost, p_start, p_end, p_status,
                                    p_error_type, p_metadata)
$$;
