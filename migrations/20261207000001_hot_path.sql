-- The hot path at the floor, and the audit trail at a tenth of the cost (issue 27).
--
-- 1. `llmlite_inflight_token_idx` goes. Leases are counted by the immutable key id since
--    20261130000001 (`llmlite_inflight_key_idx`); the two readers by token left (erasure's
--    check and the console's key page) read a table that holds only the requests in flight.
--    One index write fewer per admission.
-- 2. Request audit records are queued in PostgreSQL by the settlement that charges the request,
--    in the same statement and transaction, and shipped to the audit bucket in batches, as JSON
--    Lines objects (`Auditor::ship_requests`): one S3 PUT per batch of records instead of one per
--    request, and objects large enough (128 KiB) for the bucket's archive tier. The queue is as
--    durable as the spend row, so a record is never only in memory.
-- 3. `llmlite_settle_recorded` is `llmlite_settle_presented` with the audit record; the older
--    entry points keep their signatures for instances still running the previous code during a
--    deploy, and delegate to it (with no audit record: those instances write their own).

DROP INDEX llmlite_inflight_token_idx;

CREATE TABLE llmlite_audit_queue (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     TIMESTAMPTZ NOT NULL,   -- the request's arrival: the day its record is filed under
    record TEXT NOT NULL           -- the audit record, one JSON object
);

-- One row: shippers take it FOR UPDATE SKIP LOCKED, so one ships at a time and the others
-- move on (a row lock, not an advisory lock: RDS Proxy keeps sessions unpinned).
CREATE TABLE llmlite_audit_shipper (
    id INTEGER PRIMARY KEY CHECK (id = 1)
);
INSERT INTO llmlite_audit_shipper VALUES (1);

-- Settles a request as llmlite_settle_presented does (one spend row, once; the reservation
-- swapped for the cost on key, user and team; the TPM buckets charged the tokens the estimate
-- missed; the lease released) and, when the spend row is new, queues `p_audit`. Returns the
-- key's spend afterwards and the queue row's id (NULL when nothing was queued).
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
    p_audit        TEXT          -- the audit record (NULL: the caller writes its own)
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
                               cache_creation_input_tokens, total_tokens, spend, start_time,
                               end_time, request_duration_ms, status, error_type, metadata)
    VALUES (p_request_id, COALESCE(p_call_type, 'acompletion'), p_token, p_presented,
            p_key_alias, p_user_id, p_team_id, p_end_user, p_model, p_model_id, p_prompt,
            p_completion, p_cache_read, p_cache_write, p_prompt + p_completion, p_cost, p_start,
            p_end, GREATEST((EXTRACT(EPOCH FROM (p_end - p_start)) * 1000)::bigint, 0), p_status,
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

-- The previous entry point, for instances still running the previous code during a deploy:
-- same signature, same rows, one implementation (they write their own audit records).
CREATE OR REPLACE FUNCTION llmlite_settle_presented(
    p_call_type TEXT, p_presented TEXT, p_request_id TEXT, p_key_id BIGINT, p_token TEXT,
    p_key_alias TEXT, p_user_id TEXT, p_team_id TEXT, p_end_user TEXT, p_model TEXT,
    p_model_id TEXT, p_prompt BIGINT, p_completion BIGINT, p_cache_read BIGINT,
    p_cache_write BIGINT, p_cost NUMERIC, p_start TIMESTAMPTZ, p_end TIMESTAMPTZ, p_status TEXT,
    p_error_type TEXT, p_metadata JSONB
) RETURNS NUMERIC LANGUAGE sql AS $$
    SELECT key_spend FROM llmlite_settle_recorded(p_call_type, p_presented, p_request_id,
                                                  p_key_id, p_token, p_key_alias, p_user_id,
                                                  p_team_id, p_end_user, p_model, p_model_id,
                                                  p_prompt, p_completion, p_cache_read,
                                                  p_cache_write, p_cost, p_start, p_end,
                                                  p_status, p_error_type, p_metadata, NULL)
$$;
