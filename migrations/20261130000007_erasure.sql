-- Erasure (POST /user/delete and /key/delete with "erase": true, llmlite::admin::erasure).
--
-- The application role may only append to llmlite_admin_action (llmlite::db_roles), yet an
-- erasure must take the erased user's ID, e-mail and free text out of the rows that name them.
-- This function is the one way it can: it runs with its owner's rights (SECURITY DEFINER) and
-- does exactly that, nothing else.
--
-- - p_tokens: the erased values (user IDs, e-mails) and p_pseudonyms their replacements, in the
--   same order. Every JSON string equal to an erased value, in `before` and `after`, and an
--   `object_id` equal to one, is replaced. A pseudonym must have the shape erasure gives them, so
--   the function cannot be used to write arbitrary text into the audit trail.
-- - p_objects: the objects (user IDs, key hashes) whose rows lose their free text first: the values of
--   user_email, user_alias, key_alias, team_alias and metadata become "[erased]".
--
-- Returns how many rows changed. The S3 copies of earlier records are write-once; they hold IDs
-- but no free text (llmlite::admin::Action scrubs it before a record is written).
CREATE FUNCTION llmlite_erase_admin_actions(
    p_tokens     TEXT[],
    p_pseudonyms TEXT[],
    p_objects    TEXT[]
) RETURNS BIGINT
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    changed BIGINT := 0;
    n BIGINT;
    i INT;
    free_text CONSTANT TEXT[] := ARRAY['user_email', 'user_alias', 'key_alias', 'team_alias', 'metadata'];
    f TEXT;
BEGIN
    IF coalesce(array_length(p_tokens, 1), 0) <> coalesce(array_length(p_pseudonyms, 1), 0) THEN
        RAISE EXCEPTION 'llmlite_erase_admin_actions: % tokens but % pseudonyms',
            coalesce(array_length(p_tokens, 1), 0), coalesce(array_length(p_pseudonyms, 1), 0);
    END IF;
    FOREACH f IN ARRAY free_text LOOP
        UPDATE llmlite_admin_action
           SET before = CASE WHEN before ? f AND before -> f <> 'null'::jsonb
                             THEN jsonb_set(before, ARRAY[f], '"[erased]"') ELSE before END,
               after = CASE WHEN after ? f AND after -> f <> 'null'::jsonb
                            THEN jsonb_set(after, ARRAY[f], '"[erased]"') ELSE after END
         WHERE object_id = ANY(p_objects)
           AND ((before ? f AND before -> f <> 'null'::jsonb)
                OR (after ? f AND after -> f <> 'null'::jsonb));
        GET DIAGNOSTICS n = ROW_COUNT;
        changed := changed + n;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(p_tokens, 1), 0) LOOP
        IF p_pseudonyms[i] !~ '^erased-[a-z_]+-[0-9a-f]{24}$' OR coalesce(p_tokens[i], '') = '' THEN
            RAISE EXCEPTION 'llmlite_erase_admin_actions: not an erasure pseudonym';
        END IF;
        UPDATE llmlite_admin_action
           SET object_id = CASE WHEN object_id = p_tokens[i] THEN p_pseudonyms[i] ELSE object_id END,
               before = replace(before::text, to_jsonb(p_tokens[i])::text,
                                to_jsonb(p_pseudonyms[i])::text)::jsonb,
               after = replace(after::text, to_jsonb(p_tokens[i])::text,
                               to_jsonb(p_pseudonyms[i])::text)::jsonb
         WHERE object_id = p_tokens[i]
            OR strpos(before::text, to_jsonb(p_tokens[i])::text) > 0
            OR strpos(after::text, to_jsonb(p_tokens[i])::text) > 0;
        GET DIAGNOSTICS n = ROW_COUNT;
        changed := changed + n;
    END LOOP;
    RETURN changed;
END
$$;
