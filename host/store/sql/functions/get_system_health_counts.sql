-- Whole-system counts for /health/status. Scans tasks and steps: not for the hot path.
CREATE OR REPLACE FUNCTION get_system_health_counts(p_now timestamptz DEFAULT now())
RETURNS TABLE (
    total_tasks bigint,
    pending_tasks bigint,
    in_progress_tasks bigint,
    complete_tasks bigint,
    error_tasks bigint,
    cancelled_tasks bigint,
    total_steps bigint,
    pending_steps bigint,
    in_progress_steps bigint,
    waiting_for_retry_steps bigint,
    complete_steps bigint,
    error_steps bigint,
    cancelled_steps bigint,
    resolved_steps bigint,
    ready_steps bigint,
    retry_backlog bigint,
    expired_leases bigint,
    active_connections bigint,
    max_connections bigint
)
LANGUAGE sql STABLE AS $$
    SELECT t.total, t.pending, t.in_progress, t.complete, t.error, t.cancelled,
           s.total, s.pending, s.in_progress, s.waiting, s.complete, s.error, s.cancelled,
           s.resolved,
           (SELECT count(*) FROM steps x WHERE x.ready_at IS NOT NULL AND x.ready_at <= p_now),
           -- Not a task waiting for its concurrency key's slot (ready_at 'infinity').
           (SELECT count(*) FROM steps x WHERE x.ready_at > p_now AND x.ready_at < 'infinity'),
           (SELECT count(*) FROM steps x
            WHERE x.lease_expires_at IS NOT NULL AND x.lease_expires_at < p_now),
           (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = current_database()),
           current_setting('max_connections')::bigint
    FROM (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE state = 'pending') AS pending,
               count(*) FILTER (WHERE state = 'in_progress') AS in_progress,
               count(*) FILTER (WHERE state = 'complete') AS complete,
               count(*) FILTER (WHERE state = 'error') AS error,
               count(*) FILTER (WHERE state = 'cancelled') AS cancelled
        FROM tasks
    ) t,
    (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE state = 'pending') AS pending,
               count(*) FILTER (WHERE state = 'in_progress') AS in_progress,
               count(*) FILTER (WHERE state = 'waiting_for_retry') AS waiting,
               count(*) FILTER (WHERE state = 'complete') AS complete,
               count(*) FILTER (WHERE state = 'error') AS error,
               count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE state = 'resolved_manually') AS resolved
        FROM steps
    ) s
$$;
