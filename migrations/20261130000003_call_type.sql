-- Spend rows say which API a request came through: `acompletion` (OpenAI's chat completions,
-- which llmlite_settle writes) or `anthropic_messages` (Anthropic's Messages API). This settles
-- through llmlite_settle and names the call type in the same transaction, one round trip. A
-- row already rolled up is left as it is (a late duplicate settlement must not move spend
-- between the rollup's call types).
CREATE FUNCTION llmlite_settle_as(
    p_call_type    TEXT,
    p_request_id   TEXT,
    p_key_id       BIGINT,
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
    key_spend NUMERIC;
BEGIN
    key_spend := llmlite_settle(p_request_id, p_key_id, p_token, p_key_alias, p_user_id,
                                p_team_id, p_end_user, p_model, p_model_id, p_prompt,
                                p_completion, p_cache_read, p_cache_write, p_cost, p_start,
                                p_end, p_status, p_error_type, p_metadata);
    IF p_call_type IS DISTINCT FROM 'acompletion' THEN
        UPDATE litellm_spend SET call_type = p_call_type
         WHERE request_id = p_request_id AND rolled_at IS NULL;
    END IF;
    RETURN key_spend;
END
$$;
