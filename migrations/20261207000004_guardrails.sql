-- Bedrock Guardrails as an optional layer (issue 28).
--
-- 1. Keys and teams get `guardrail` (`{"id": "...", "version": "..."}`, NULL: none). The admin
--    API checks it against Bedrock's patterns before it is stored.
-- 2. Admission returns both (`key_guardrail`, `team_guardrail`; the key's wins over the team's,
--    in the gateway). `llmlite_admit`'s body is not written again: the function of
--    20261207000003 is renamed `llmlite_admit_checked`, and `llmlite_admit` (the same
--    signature, so instances still running the previous code call it unchanged) calls it and
--    adds the two settings of the key and team it admitted, in the same round trip.
-- 3. What a guardrail did and cost is kept with the spend row's metadata
--    (`llmlite_guardrail`), as the PII guard's findings are; its cost is in `spend`.

ALTER TABLE litellm_verificationtoken ADD COLUMN guardrail JSONB;
ALTER TABLE litellm_teamtable ADD COLUMN guardrail JSONB;

ALTER TYPE llmlite_admission
    ADD ATTRIBUTE key_guardrail JSONB,
    ADD ATTRIBUTE team_guardrail JSONB;

ALTER FUNCTION llmlite_admit(TEXT, TEXT[], NUMERIC[], TEXT, TEXT, TIMESTAMPTZ, BIGINT, NUMERIC,
                             INTERVAL, NUMERIC, BOOLEAN, TEXT)
    RENAME TO llmlite_admit_checked;

CREATE FUNCTION llmlite_admit(
    p_token TEXT, p_chain TEXT[], p_reserves NUMERIC[], p_model_id TEXT, p_request_id TEXT,
    p_now TIMESTAMPTZ, p_estimate BIGINT, p_estimate_cost NUMERIC, p_lease INTERVAL,
    p_period NUMERIC, p_cache_1h BOOLEAN, p_service_tier TEXT
) RETURNS llmlite_admission LANGUAGE plpgsql AS $$
DECLARE
    r llmlite_admission;
BEGIN
    r := llmlite_admit_checked(p_token, p_chain, p_reserves, p_model_id, p_request_id, p_now,
                               p_estimate, p_estimate_cost, p_lease, p_period, p_cache_1h,
                               p_service_tier);
    IF r.decision = 'ok' THEN
        SELECT k.guardrail INTO r.key_guardrail
        FROM litellm_verificationtoken k WHERE k.token = r.token;
        IF r.team_id IS NOT NULL THEN
            SELECT t.guardrail INTO r.team_guardrail
            FROM litellm_teamtable t WHERE t.team_id = r.team_id;
        END IF;
    END IF;
    RETURN r;
END
$$;
