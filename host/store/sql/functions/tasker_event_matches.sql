-- `*`, `family.*` or an exact name; the same rules as tasker_core::events::matches.
CREATE OR REPLACE FUNCTION tasker_event_matches(p_patterns text[], p_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(p_patterns) p
        WHERE p = '*' OR p = p_name
           OR (right(p, 2) = '.*' AND left(p_name, length(p) - 1) = left(p, -1)))
$$;
