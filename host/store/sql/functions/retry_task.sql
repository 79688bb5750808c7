-- Retry a task in error: its error steps go back to pending with a fresh attempt budget
-- (and lease-loss budget); the task goes back to pending. A task with a concurrency key
-- joins its key's line again (tasker_concurrency_admit): until it is admitted, no step of
-- it is ready.
CREATE OR REPLACE FUNCTION retry_task(p_task_id bigint, p_now timestamptz DEFAULT now())
RETURNS TABLE (task_id bigint, steps_reset int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_state text;
    v_key text;
    v_steps bigint[];
    v_n int := 0;
    v_ready int := 0;
BEGIN
    SELECT t.state, t.concurrency_key INTO v_state, v_key FROM tasks t WHERE t.id = p_task_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown task %', p_task_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_state <> 'error' THEN
        RAISE EXCEPTION 'task % is %; only a task in error can be retried', p_task_id, v_state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM set_config('tasker.reason', 'task_retry', true);

    SELECT array_agg(s.id ORDER BY s.id) INTO v_steps
    FROM steps s WHERE s.task_id = p_task_id AND s.state = 'error';
    PERFORM tasker_lock_steps(v_steps, false);
    WITH u AS (
        UPDATE steps s
        SET state = 'pending', attempts = 0, lease_losses = 0,
            ready_at = CASE WHEN s.unfinished_parents > 0 THEN NULL
                            WHEN v_key IS NULL THEN p_now ELSE 'infinity' END,
            backoff_request_ms = NULL, finished_at = NULL, updated_at = p_now
        WHERE s.id = ANY (v_steps) AND s.state = 'error'
        RETURNING s.ready_at
    )
    SELECT count(*), count(*) FILTER (WHERE u.ready_at < 'infinity') INTO v_n, v_ready FROM u;

    PERFORM tasker_lock_tasks(ARRAY[p_task_id]);
    UPDATE tasks t SET state = 'pending', error_steps = 0, finished_at = NULL, updated_at = p_now,
                       concurrency_state = CASE WHEN v_key IS NOT NULL THEN 'waiting' END
    WHERE t.id = p_task_id AND t.state = 'error';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % left the error state during the retry', p_task_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_key IS NOT NULL THEN
        PERFORM tasker_concurrency_admit(v_key, p_now);
    END IF;
    IF v_ready > 0 THEN
        PERFORM pg_notify('tasker_ready', v_ready::text);
    END IF;
    RETURN QUERY SELECT p_task_id, v_n;
END
$$;
