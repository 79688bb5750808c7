-- Backoff, readiness, execution context, dependency levels, health counts.
--
-- The readiness functions evaluate the DAG from first principles (parents' states, attempts,
-- the backoff formula). The claim path instead trusts the counters kept on each step
-- (unfinished_parents, ready_at). A test drives every fixture and checks both agree.

-- tasker_core::backoff::jitter_unit: a number in [0, 1) from a seed and a failure number.
CREATE FUNCTION tasker_jitter_unit(p_seed bigint, p_failure bigint) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (((((p_seed % 2147483648) + 2147483648) % 2147483648) * 1103515245
             + (((p_failure % 2147483648) + 2147483648) % 2147483648) * 12345
             + 1013904223) % 2147483648)::float8 / 2147483648.0::float8
$$;

-- tasker_core::backoff::Backoff::delay_ms: the delay in ms before retrying after failure
-- number p_failure (1-based), seeded by p_seed (the step id). Same float operations in the
-- same order as the Rust; the branch only avoids PostgreSQL's float overflow errors where
-- the Rust result is the cap anyway.
CREATE FUNCTION tasker_backoff_ms(
    p_base_ms bigint, p_multiplier float8, p_cap_ms bigint, p_jitter float8,
    p_seed bigint, p_failure bigint
) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    v_exp    float8 := greatest(p_failure - 1, 0)::float8;
    v_log    float8;
    v_capped float8;
    v_j      float8 := least(greatest(p_jitter, 0.0::float8), 1.0::float8);
    v_delay  float8;
BEGIN
    IF p_multiplier <= 0 THEN
        RAISE EXCEPTION 'backoff multiplier must be > 0, got %', p_multiplier
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_base_ms <= 0 THEN
        -- 0 * m^e is 0 unless m^e overflows f64 (then NaN, and Rust's f64::min picks the cap).
        IF v_exp * ln(p_multiplier) >= 709.782712893384 THEN
            v_capped := p_cap_ms::float8;
        ELSE
            v_capped := 0;
        END IF;
    ELSE
        v_log := ln(p_base_ms::float8) + v_exp * ln(p_multiplier);
        IF v_log > 700 THEN
            v_capped := p_cap_ms::float8;
        ELSIF v_log < -700 THEN
            v_capped := 0;
        ELSE
            v_capped := least(p_base_ms::float8 * power(p_multiplier, v_exp), p_cap_ms::float8);
        END IF;
    END IF;
    v_delay := floor(v_capped * (1.0::float8 - v_j
                                 + 2.0::float8 * v_j * tasker_jitter_unit(p_seed, p_failure)));
    IF v_delay >= p_cap_ms::float8 THEN
        RETURN p_cap_ms;
    END IF;
    RETURN greatest(v_delay, 0)::bigint;
END
$$;

CREATE FUNCTION tasker_ms(p_ms bigint) RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT p_ms * interval '1 millisecond'
$$;

-- Readiness of every step of the given tasks, and why.
CREATE FUNCTION get_step_readiness_status_batch(
    p_task_ids bigint[], p_now timestamptz DEFAULT now()
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
    ready_for_execution boolean
)
LANGUAGE sql STABLE AS $$
    SELECT s.id, s.task_id, s.name, s.state,
           p.total = p.done,
           p.total, p.done,
           r.eligible,
           coalesce(s.attempts, 0), s.max_attempts, s.retryable,
           n.next_retry_at, s.last_attempted_at, s.last_failure_at, s.backoff_request_ms,
           s.state IN ('pending', 'waiting_for_retry')
               AND p.total = p.done
               AND r.eligible
               AND (n.next_retry_at IS NULL OR n.next_retry_at <= p_now)
    FROM steps s
    CROSS JOIN LATERAL (
        SELECT count(*)::int AS total,
               (count(*) FILTER (WHERE ps.state IN ('complete', 'resolved_manually')))::int AS done
        FROM edges e JOIN steps ps ON ps.id = e.parent_id
        WHERE e.child_id = s.id
    ) p
    -- A never-tried step has attempts = 0 (coalesce guards the NULL-attempts bug).
    CROSS JOIN LATERAL (
        SELECT s.state IN ('pending', 'waiting_for_retry')
               AND coalesce(s.attempts, 0) < s.max_attempts AS eligible
    ) r
    -- Only a step waiting for a retry has a retry time: its last interruption plus either the
    -- requested delay or the backoff for its failure count. One instant, never an OR of two.
    CROSS JOIN LATERAL (
        SELECT CASE WHEN s.state = 'waiting_for_retry' THEN
                   s.last_failure_at + tasker_ms(coalesce(
                       s.backoff_request_ms,
                       tasker_backoff_ms(s.backoff_base_ms, s.backoff_multiplier, s.backoff_cap_ms,
                                         s.backoff_jitter, s.id, s.attempts)))
               END AS next_retry_at
    ) n
    WHERE s.task_id = ANY (p_task_ids)
$$;

CREATE FUNCTION get_step_readiness_status(
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
    ready_for_execution boolean
)
LANGUAGE sql STABLE AS $$
    SELECT r.*
    FROM get_step_readiness_status_batch(ARRAY[p_task_id], p_now) r
    WHERE p_step_ids IS NULL OR r.step_id = ANY (p_step_ids)
    ORDER BY r.step_id
$$;

-- Per task: counts by state and what it is doing. execution_status precedence:
-- has_ready_steps > processing (in_progress or waiting_for_retry) > blocked_by_failures
-- (a step in error, which is permanent or exhausted, and nothing else can move) >
-- all_complete > cancelled > waiting_for_dependencies.
CREATE FUNCTION get_task_execution_context_batch(
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
LANGUAGE sql STABLE AS $$
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
    ORDER BY s.task_id
$$;

CREATE FUNCTION get_task_execution_context(
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

-- Longest path from a root (level 0) to each step. Enumerates paths, so it is meant for
-- inspection, not the hot path.
CREATE FUNCTION calculate_dependency_levels(p_task_id bigint)
RETURNS TABLE (step_id bigint, name text, dependency_level int)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk (step_id, level) AS (
        SELECT s.id, 0
        FROM steps s
        WHERE s.task_id = p_task_id
          AND NOT EXISTS (SELECT 1 FROM edges e WHERE e.child_id = s.id)
        UNION ALL
        SELECT e.child_id, w.level + 1
        FROM walk w JOIN edges e ON e.parent_id = w.step_id
    )
    SELECT s.id, s.name, max(w.level)::int
    FROM walk w JOIN steps s ON s.id = w.step_id
    GROUP BY s.id, s.name
    ORDER BY max(w.level), s.id
$$;

-- Whole-system counts for /health/status. Scans tasks and steps: not for the hot path.
CREATE FUNCTION get_system_health_counts(p_now timestamptz DEFAULT now())
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
           (SELECT count(*) FROM steps x WHERE x.ready_at IS NOT NULL AND x.ready_at > p_now),
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
