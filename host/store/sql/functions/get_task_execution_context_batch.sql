-- Per task: counts by state and what it is doing. execution_status precedence:
-- has_ready_steps > processing (in_progress or waiting_for_retry) > blocked_by_failures
-- (a step in error, which is permanent or exhausted, and nothing else can move) >
-- all_complete > cancelled > waiting_for_dependencies.
-- PL/pgSQL with a forced generic plan since 0017: as an inlined SQL function it was planned
-- afresh on every call (its custom plans never gave way to a generic one), 2 ms of server CPU
-- for a 100-step task; hash joins only, so the cached plan stays linear in steps and tasks.
CREATE OR REPLACE FUNCTION get_task_execution_context_batch(
    p_task_ids bigint[], p_now timestamptz DEFAULT now()
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
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET enable_nestloop = off SET enable_mergejoin = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH c AS (
        SELECT t.id AS task_id, t.state AS task_state,
               count(r.step_id)::int AS total,
               (count(*) FILTER (WHERE r.current_state = 'pending'))::int AS pending,
               (count(*) FILTER (WHERE r.current_state = 'in_progress'))::int AS in_progress,
               (count(*) FILTER (WHERE r.current_state = 'waiting_for_retry'))::int AS waiting,
               (count(*) FILTER (WHERE r.current_state = 'complete'))::int AS complete,
               (count(*) FILTER (WHERE r.current_state = 'resolved_manually'))::int AS resolved,
               (count(*) FILTER (WHERE r.current_state = 'error'))::int AS failed,
               (count(*) FILTER (WHERE r.current_state = 'cancelled'))::int AS cancelled,
               (count(*) FILTER (WHERE r.ready_for_execution))::int AS ready
        FROM tasks t
        LEFT JOIN get_step_readiness_status_batch(p_task_ids, p_now) r ON r.task_id = t.id
        WHERE t.id = ANY (p_task_ids)
        GROUP BY t.id, t.state
    ), s AS (
        SELECT c.*,
               CASE
                   WHEN c.ready > 0 THEN 'has_ready_steps'
                   WHEN c.in_progress > 0 OR c.waiting > 0 THEN 'processing'
                   WHEN c.failed > 0 THEN 'blocked_by_failures'
                   WHEN c.complete + c.resolved = c.total THEN 'all_complete'
                   WHEN c.cancelled > 0 OR c.task_state = 'cancelled' THEN 'cancelled'
                   ELSE 'waiting_for_dependencies'
               END AS status
        FROM c
    )
    SELECT s.task_id, s.task_state, s.total, s.pending, s.in_progress, s.waiting, s.complete,
           s.resolved, s.failed, s.cancelled, s.ready, s.status,
           CASE s.status
               WHEN 'has_ready_steps' THEN 'execute_ready_steps'
               WHEN 'processing' THEN 'wait_for_completion'
               WHEN 'blocked_by_failures' THEN 'handle_failures'
               WHEN 'all_complete' THEN
                   CASE WHEN s.task_state = 'complete' THEN 'none' ELSE 'finalize_task' END
               WHEN 'cancelled' THEN 'none'
               ELSE 'wait_for_dependencies'
           END,
           CASE WHEN s.total = 0 THEN 0::numeric
                ELSE round(100.0 * (s.complete + s.resolved) / s.total, 2) END,
           CASE
               WHEN s.status = 'blocked_by_failures' THEN 'blocked'
               WHEN s.status = 'cancelled' THEN 'unknown'
               WHEN s.waiting > 0 OR s.failed > 0 THEN 'recovering'
               ELSE 'healthy'
           END
    FROM s
    ORDER BY s.task_id;
END
$$;
