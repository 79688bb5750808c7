-- get_step_readiness_status_batch for one task, optionally only some of its steps.
CREATE OR REPLACE FUNCTION get_step_readiness_status(
    p_task_id bigint, p_step_ids bigint[] DEFAULT NULL, p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    step_id bigint,
    task_id bigint,
    name text,
    current_state text,
    dependencies_satisfied boolean,
    total_parents int,
    completed_parents int,
    retry_eligible boolean,
    attempts int,
    max_attempts int,
    retryable boolean,
    next_retry_at timestamptz,
    last_attempted_at timestamptz,
    last_failure_at timestamptz,
    backoff_request_ms bigint,
    ready_for_execution boolean,
    priority int,
    not_before timestamptz,
    ahead int,
    concurrency_key text,
    concurrency_holding int,
    concurrency_limit int
)
LANGUAGE sql STABLE AS $$
    SELECT r.*
    FROM get_step_readiness_status_batch(ARRAY[p_task_id], p_now) r
    WHERE p_step_ids IS NULL OR r.step_id = ANY (p_step_ids)
    ORDER BY r.step_id
$$;
