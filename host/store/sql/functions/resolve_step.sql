-- Resolve a step by hand (pending, waiting_for_retry or error -> resolved_manually). It counts
-- as complete for its children, which are released. The task may complete, or, if it was in
-- error and can move again, go back to pending.
CREATE OR REPLACE FUNCTION resolve_step(
    p_step_id bigint, p_result jsonb DEFAULT NULL, p_now timestamptz DEFAULT now()
) RETURNS TABLE (step_id bigint, task_id bigint, ready_children int, task_state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_step record;
    v_ready int;
    v_task_state text;
BEGIN
    SELECT s.id, s.task_id, s.state INTO v_step FROM steps s WHERE s.id = p_step_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown step %', p_step_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM set_config('tasker.reason', 'resolved_manually', true);
    PERFORM tasker_lock_steps(ARRAY[p_step_id], true);
    SELECT s.state INTO v_step.state FROM steps s WHERE s.id = p_step_id;
    IF v_step.state NOT IN ('pending', 'waiting_for_retry', 'error') THEN
        RAISE EXCEPTION 'step % is %; only a pending, waiting_for_retry or error step can be resolved',
            p_step_id, v_step.state USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    UPDATE steps s
    SET state = 'resolved_manually', ready_at = NULL, result = p_result, finished_at = p_now,
        updated_at = p_now
    WHERE s.id = p_step_id;
    v_ready := tasker_release_children(ARRAY[p_step_id], p_now);

    PERFORM tasker_lock_tasks(ARRAY[v_step.task_id]);
    UPDATE tasks t
    SET unfinished_steps = t.unfinished_steps - 1,
        error_steps = t.error_steps - CASE WHEN v_step.state = 'error' THEN 1 ELSE 0 END,
        updated_at = p_now
    WHERE t.id = v_step.task_id
    RETURNING t.state INTO v_task_state;

    IF v_task_state = 'error' THEN
        -- Blocked before; unblocked now if something can move or nothing is left.
        UPDATE tasks t SET state = 'pending', finished_at = NULL, updated_at = p_now
        WHERE t.id = v_step.task_id
          AND (t.unfinished_steps = 0 OR t.error_steps = 0
               OR EXISTS (SELECT 1 FROM steps s WHERE s.task_id = t.id
                          AND (s.state IN ('in_progress', 'waiting_for_retry')
                               OR s.ready_at IS NOT NULL)));
    END IF;
    PERFORM tasker_finalize_tasks(ARRAY[v_step.task_id], p_now);
    SELECT t.state INTO v_task_state FROM tasks t WHERE t.id = v_step.task_id;
    IF v_ready > 0 THEN
        PERFORM pg_notify('tasker_ready', v_ready::text);
    END IF;
    RETURN QUERY SELECT p_step_id, v_step.task_id, v_ready, v_task_state;
END
$$;
