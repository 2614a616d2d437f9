-- Bedrock Guardrails as an optional layer, and residency per key and team (issue 28).
--
-- 1. Keys and teams get `guardrail` (`{"id": "...", "version": "..."}`, NULL: none). The admin
--    API checks it against Bedrock's patterns before it is stored.
-- 2. Keys and teams get `residency`: the geographies of the inference profiles that may serve
--    them (`{eu}`; NULL: any the catalog lists). A model may be served by several profiles
--    (`eu.`, `global.`, ...), each a route of its own in the request's chain.
-- 3. Admission returns both settings of the key and team it admitted (`key_guardrail`,
--    `team_guardrail`, `key_residency`, `team_residency`), and drops from the chain, before
--    anything is taken, the routes either residency does not allow (`p_geographies`: each chain
--    route's geography). A request none of whose model's routes is allowed is refused,
--    `feature_not_allowed` with detail `residency`. `llmlite_admit`'s body is not written again:
--    the function of 20261207000003 is renamed `llmlite_admit_checked`, and the new
--    `llmlite_admit` reads the settings once, filters the chain, calls it, and adds the
--    settings, in the same round trip.
--    The previous signature stays for instances still running the previous code during a
--    deploy (no geographies: no filtering).
-- 4. What a guardrail did and cost is kept with the spend row's metadata (`llmlite_guardrail`),
--    as the PII guard's findings are; its cost is in `spend`. The route that served a request is
--    the spend row's `model_id`, as before.

ALTER TABLE litellm_verificationtoken
    ADD COLUMN guardrail JSONB,
    ADD COLUMN residency TEXT[]
        CHECK (cardinality(residency) > 0 AND residency <@ ARRAY['eu', 'us', 'us-gov', 'apac',
               'jp', 'au', 'ca', 'global', 'in_region']::TEXT[]);
ALTER TABLE litellm_teamtable
    ADD COLUMN guardrail JSONB,
    ADD COLUMN residency TEXT[]
        CHECK (cardinality(residency) > 0 AND residency <@ ARRAY['eu', 'us', 'us-gov', 'apac',
               'jp', 'au', 'ca', 'global', 'in_region']::TEXT[]);

ALTER TYPE llmlite_admission
    ADD ATTRIBUTE key_guardrail JSONB,
    ADD ATTRIBUTE team_guardrail JSONB,
    ADD ATTRIBUTE key_residency TEXT[],
    ADD ATTRIBUTE team_residency TEXT[];

ALTER FUNCTION llmlite_admit(TEXT, TEXT[], NUMERIC[], TEXT, TEXT, TIMESTAMPTZ, BIGINT, NUMERIC,
                             INTERVAL, NUMERIC, BOOLEAN, TEXT)
    RENAME TO llmlite_admit_checked;

CREATE FUNCTION llmlite_admit(
    p_token TEXT, p_chain TEXT[], p_reserves NUMERIC[], p_model_id TEXT, p_request_id TEXT,
    p_now TIMESTAMPTZ, p_estimate BIGINT, p_estimate_cost NUMERIC, p_lease INTERVAL,
    p_period NUMERIC, p_cache_1h BOOLEAN, p_service_tier TEXT,
    p_geographies TEXT[]          -- each chain route's geography (NULL: do not filter)
) RETURNS llmlite_admission LANGUAGE plpgsql AS $$
DECLARE
    r        llmlite_admission;
    k_res    TEXT[];
    t_res    TEXT[];
    k_guard  JSONB;
    t_guard  JSONB;
    team     TEXT;
    chain    TEXT[] := p_chain;
    reserves NUMERIC[] := p_reserves;
    i        INT;
BEGIN
    -- The key's and its team's settings, read once (the key, or during a rotation's grace
    -- period the key its old hash points at, as llmlite_admit_checked resolves it).
    SELECT v.residency, v.guardrail, v.team_id INTO k_res, k_guard, team
    FROM litellm_verificationtoken v
    WHERE v.token = COALESCE(
        (SELECT d.active_token FROM llmlite_deprecated_token d WHERE d.token = p_token),
        p_token);
    IF team IS NOT NULL THEN
        SELECT t.residency, t.guardrail INTO t_res, t_guard
        FROM litellm_teamtable t WHERE t.team_id = team;
    END IF;
    IF p_geographies IS NOT NULL THEN
        IF k_res IS NOT NULL OR t_res IS NOT NULL THEN
            chain := '{}'; reserves := '{}';
            FOR i IN 1 .. cardinality(p_chain) LOOP
                IF (k_res IS NULL OR p_geographies[i] = ANY (k_res))
                   AND (t_res IS NULL OR p_geographies[i] = ANY (t_res)) THEN
                    chain := chain || p_chain[i];
                    reserves := reserves || p_reserves[i];
                END IF;
            END LOOP;
            -- No route to the model asked for: refused before anything is taken, naming the
            -- narrower setting (the key's when it alone refuses every route).
            IF cardinality(chain) = 0 OR chain[1] <> p_chain[1] THEN
                r.decision := 'feature_not_allowed';
                r.detail := 'residency';
                r.scope := CASE WHEN k_res IS NOT NULL AND NOT EXISTS (
                                    SELECT 1 FROM unnest(p_chain, p_geographies) AS c(model, geo)
                                    WHERE c.model = p_chain[1] AND c.geo = ANY (k_res))
                                THEN 'key' ELSE 'team' END;
                RETURN r;
            END IF;
        END IF;
    END IF;
    r := llmlite_admit_checked(p_token, chain, reserves, p_model_id, p_request_id, p_now,
                               p_estimate, p_estimate_cost, p_lease, p_period, p_cache_1h,
                               p_service_tier);
    IF r.decision = 'ok' THEN
        r.key_guardrail := k_guard; r.key_residency := k_res;
        r.team_guardrail := t_guard; r.team_residency := t_res;
    END IF;
    RETURN r;
END
$$;

-- The previous signature: a request whose routes are not told apart.
CREATE FUNCTION llmlite_admit(
    p_token TEXT, p_chain TEXT[], p_reserves NUMERIC[], p_model_id TEXT, p_request_id TEXT,
    p_now TIMESTAMPTZ, p_estimate BIGINT, p_estimate_cost NUMERIC, p_lease INTERVAL,
    p_period NUMERIC, p_cache_1h BOOLEAN, p_service_tier TEXT
) RETURNS llmlite_admission LANGUAGE sql AS $$
    SELECT * FROM llmlite_admit(p_token, p_chain, p_reserves, p_model_id, p_request_id, p_now,
                                p_estimate, p_estimate_cost, p_lease, p_period, p_cache_1h,
                                p_service_tier, NULL)
$$;
