-- Readiness of every step of the given tasks, and why, evaluated from the DAG itself
-- (parents' states, attempts, the backoff formula). The claim never uses it: it trusts the
-- counters (unfinished_parents, ready_at), and a test checks both agree on every fixture.
CREATE OR REPLACE FUNCTION get_step_readiness_status_batch(
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
