-- get_task_execution_context_batch for one task.
CREATE OR REPLACE FUNCTION get_task_execution_context(
    p_task_id bigint, p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    task_id bigint,
    task_state text,
    total_steps int,
    pending_steps int,
    in_progress_steps int,
    waiting_for_retry_steps int,
    completed_steps int,
    resolved_steps int,
    failed_steps int,
    cancelled_steps int,
    ready_steps int,
    execution_status text,
    recommended_action text,
    completion_percentage numeric,
    health_status text
)
LANGUAGE sql STABLE AS $$
    SELECT * FROM get_task_execution_context_batch(ARRAY[p_task_id], p_now)
$$;
