-- Finalize tasks after their steps changed, as tasker_finalize_decision says (the WHERE and
-- the SET ask it the same question). Callers hold the task rows locked. PL/pgSQL so its plan
-- is cached per session.
CREATE OR REPLACE FUNCTION tasker_finalize_tasks(p_task_ids bigint[], p_now timestamptz)
RETURNS TABLE (task_id bigint, state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH f AS (
        UPDATE tasks t
        SET state = tasker_finalize_decision(t.state, t.unfinished_steps, t.error_steps,
                                             EXISTS (SELECT 1 FROM steps s
                                                     WHERE s.task_id = t.id
                                                       AND (s.state IN ('in_progress',
                                                                        'waiting_for_retry')
                                                            OR s.ready_at IS NOT NULL))),
            finished_at = p_now,
            updated_at = p_now
        WHERE t.id = ANY (p_task_ids)
          AND tasker_finalize_decision(t.state, t.unfinished_steps, t.error_steps,
                                       EXISTS (SELECT 1 FROM steps s
                                               WHERE s.task_id = t.id
                                                 AND (s.state IN ('in_progress',
                                                                  'waiting_for_retry')
                                                      OR s.ready_at IS NOT NULL))) IS NOT NULL
        RETURNING t.id, t.state
    )
    SELECT f.id, f.state FROM f;
END
$$;
