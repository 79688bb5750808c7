-- Cancel a task: every step not yet finished -> cancelled (an in-flight claim's attempt is
-- recorded as cancelled, and its completion will be refused). Cancelling a cancelled task
-- changes nothing; a complete task cannot be cancelled.
CREATE OR REPLACE FUNCTION cancel_task(p_task_id bigint, p_now timestamptz DEFAULT now())
RETURNS TABLE (task_id bigint, cancelled boolean, steps_cancelled int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_state text;
    v_steps bigint[];
    v_n int := 0;
BEGIN
    SELECT t.state INTO v_state FROM tasks t WHERE t.id = p_task_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown task %', p_task_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_state = 'cancelled' THEN
        RETURN QUERY SELECT p_task_id, false, 0;
        RETURN;
    END IF;
    IF v_state = 'complete' THEN
        RAISE EXCEPTION 'task % is complete and cannot be cancelled', p_task_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM set_config('tasker.reason', 'cancelled', true);

    SELECT array_agg(s.id ORDER BY s.id) INTO v_steps FROM steps s WHERE s.task_id = p_task_id;
    PERFORM tasker_lock_steps(v_steps, false);
    WITH u AS (
        UPDATE steps s
        SET state = 'cancelled', ready_at = NULL, lease_expires_at = NULL, finished_at = p_now,
            updated_at = p_now
        FROM steps o
        WHERE s.id = o.id AND s.task_id = p_task_id
          AND s.state IN ('pending', 'in_progress', 'waiting_for_retry', 'error')
        RETURNING s.id, s.task_id, s.claim_count, s.worker, s.last_attempted_at,
                  o.state AS old_state
    ), a AS (
        INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at,
                              outcome, error_kind, message)
        SELECT u.id, u.claim_count, u.task_id, u.worker, u.last_attempted_at, p_now,
               'cancelled', 'cancelled', 'task cancelled while the step ran'
        FROM u WHERE u.old_state = 'in_progress'
    )
    SELECT count(*) INTO v_n FROM u;

    PERFORM tasker_lock_tasks(ARRAY[p_task_id]);
    UPDATE tasks t SET state = 'cancelled', finished_at = p_now, updated_at = p_now
    WHERE t.id = p_task_id AND t.state IN ('pending', 'in_progress', 'error');
    IF NOT FOUND THEN
        -- It finished between our read and our lock.
        SELECT t.state INTO v_state FROM tasks t WHERE t.id = p_task_id;
        RAISE EXCEPTION 'task % is % and cannot be cancelled', p_task_id, v_state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN QUERY SELECT p_task_id, true, v_n;
END
$$;
