-- Group commit (issue 27): `llmlite serve` settles the requests that finish together in one
-- transaction and one round trip.
--
-- `llmlite_settle_batch` takes the same values as `llmlite_settle_recorded`, one array per
-- parameter and one element per request, and settles each with it, so a request settled in a
-- batch writes exactly the rows it would alone (one spend row, once; the reservation swapped for
-- the cost; the lease released; its audit record queued).
--
-- Lock order. Alone, a settlement takes its lease, then its key, user and team; admission takes
-- key, user, team, then buckets; the lost-lease sweep takes a lease, then its key, user and team.
-- A batch settling one request after another would hold one request's team while it waits for
-- the next request's key, which an admission may hold while it waits for that team: a deadlock.
-- So a batch first takes every lease it will release, then every key, every user and every team,
-- each set in one order (the keys by id, the others by their text ids), and only then settles.
-- Everything it then waits for is taken in the order the others take it.

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
    p_audit        TEXT[]
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
                                       p_audit[i]) s;
        RETURN NEXT;
    END LOOP;
END
$$;
