-- Release the children of steps that just became complete / resolved_manually: decrement
-- their counters and make those reaching zero claimable now. Returns how many became ready.
-- Callers hold the children locked. PL/pgSQL so its plans are cached per session.
CREATE OR REPLACE FUNCTION tasker_release_children(p_parent_ids bigint[], p_now timestamptz)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_ready int;
BEGIN
    WITH d AS (
        SELECT e.child_id, count(*)::int AS n
        FROM edges e
        WHERE e.parent_id = ANY (p_parent_ids)
        GROUP BY e.child_id
    ), u AS (
        UPDATE steps c
        SET unfinished_parents = c.unfinished_parents - d.n,
            ready_at = CASE WHEN c.state IN ('pending', 'waiting_for_retry')
                                 AND c.unfinished_parents = d.n
                            THEN p_now ELSE c.ready_at END,
            updated_at = p_now
        FROM d
        WHERE c.id = d.child_id
        RETURNING c.ready_at IS NOT NULL AND c.unfinished_parents = 0 AS ready
    )
    SELECT (count(*) FILTER (WHERE u.ready))::int INTO v_ready FROM u;
    RETURN v_ready;
END
$$;
