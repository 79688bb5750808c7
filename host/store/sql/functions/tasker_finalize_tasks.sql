-- Finalize tasks after their steps changed: complete when no unfinished step is left;
-- error when a step is in error and nothing else can move (no in_progress, no
-- waiting_for_retry, no claimable step). Callers hold the task rows locked. PL/pgSQL so its
-- plan is cached per session.
CREATE OR REPLACE FUNCTION tasker_finalize_tasks(p_task_ids bigint[], p_now timestamptz)
RETURNS TABLE (task_id bigint, state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH f AS (
        UPDATE tasks t
        SET state = CASE WHEN t.unfinished_steps = 0 THEN 'complete' ELSE 'error' END,
            finished_at = p_now,
            updated_at = p_now
        WHERE t.id = ANY (p_task_ids)
          AND t.state IN ('pending', 'in_progress')
          AND (t.unfinished_steps = 0
               OR (t.error_steps > 0
                   AND NOT EXISTS (SELECT 1 FROM steps s
                                   WHERE s.task_id = t.id
                                     AND (s.state IN ('in_progress', 'waiting_for_retry')
                                          OR s.ready_at IS NOT NULL))))
        RETURNING t.id, t.state
    )
    SELECT f.id, f.state FROM f;
END
$$;
