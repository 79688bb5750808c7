-- Readiness of every step of the given tasks, and why, evaluated from the DAG itself
-- (parents' states, attempts, the backoff formula). The claim never uses it: it trusts the
-- counters (unfinished_parents, ready_at), and a test checks both agree on every fixture.
-- Set-based since 0017: the tasks' steps are read once, their edges in one index scan of
-- edges_pkey, and parents' states are hashed from the steps already read (0002 ran a
-- subquery per step, 5 buffer hits each, whose plan followed the statistics: with few edges it
-- seq-scanned them once per step, 1.2 ms for 100 steps). PL/pgSQL with a forced generic plan,
-- made once per session; seq scans, nested loops and merge joins off so that plan stays linear
-- whatever the tables' sizes and row estimates when it was made (docs/performance.md).
-- Since 0020: priority; not_before, a pending step's start time while it is ahead (a delayed
-- start); ahead, for a ready step, how many ready steps of higher priority a claim takes
-- before it (counted up to 1,000 per priority: tasker_claim_key, through the queue's index).
-- Since 0022: concurrency_key, _holding, _limit: set while the step's task waits in its
-- key's line (then no step of it is ready; not_before is its run_at while that is ahead).
-- That count is a nested loop, which the settings above price so high that JIT would compile
-- the statement on every call (0.6 s): jit off.
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
    ready_for_execution boolean,
    priority int,
    not_before timestamptz,
    ahead int,
    concurrency_key text,
    concurrency_holding int,
    concurrency_limit int
)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET enable_nestloop = off SET enable_mergejoin = off SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH s AS MATERIALIZED (
        SELECT s.id, s.task_id, s.name, s.state, s.attempts, s.max_attempts, s.retryable,
               s.last_attempted_at, s.last_failure_at, s.backoff_request_ms,
               s.backoff_base_ms, s.backoff_multiplier, s.backoff_cap_ms, s.backoff_jitter,
               s.priority, s.ready_at
        FROM steps s
        WHERE s.task_id = ANY (p_task_ids)
    ), w AS (
        -- The tasks among them that wait for a concurrency slot.
        SELECT t.id, t.concurrency_key, t.concurrency_limit, t.run_at, k.holding
        FROM tasks t JOIN concurrency_keys k ON k.key = t.concurrency_key
        WHERE t.id = ANY (p_task_ids) AND t.concurrency_state = 'waiting'
    ), p AS (
        -- An edge joins two steps of one task, so a parent of these steps is one of them.
        SELECT e.child_id,
               count(*)::int AS total,
               (count(*) FILTER (WHERE ps.state IN ('complete', 'resolved_manually')))::int AS done
        FROM edges e JOIN s ps ON ps.id = e.parent_id
        WHERE e.parent_id = ANY (ARRAY(SELECT s.id FROM s))
        GROUP BY e.child_id
    ), r AS (
        SELECT s.*,
               coalesce(p.total, 0) AS total,
               coalesce(p.done, 0) AS done,
               -- A never-tried step has attempts = 0 (coalesce guards the NULL-attempts bug).
               s.state IN ('pending', 'waiting_for_retry')
                   AND coalesce(s.attempts, 0) < s.max_attempts AS eligible,
               -- Only a step waiting for a retry has a retry time: its last interruption plus
               -- either the requested delay or the backoff for its failure count. One instant,
               -- never an OR of two.
               CASE WHEN s.state = 'waiting_for_retry' THEN
                   s.last_failure_at + tasker_ms(coalesce(
                       s.backoff_request_ms,
                       tasker_backoff_ms(s.backoff_base_ms, s.backoff_multiplier, s.backoff_cap_ms,
                                         s.backoff_jitter, s.id, s.attempts)))
               END AS next_retry_at
        FROM s LEFT JOIN p ON p.child_id = s.id
    ), q AS (
        SELECT r.*,
               CASE WHEN w.id IS NOT NULL THEN
                        CASE WHEN w.run_at > p_now AND r.state = 'pending' AND r.total = r.done
                             THEN w.run_at END
                    WHEN r.state = 'pending' AND r.ready_at > p_now THEN r.ready_at END
                   AS not_before,
               r.state IN ('pending', 'waiting_for_retry')
                   AND r.total = r.done
                   AND r.eligible
                   AND (r.next_retry_at IS NULL OR r.next_retry_at <= p_now)
                   AND NOT (r.state = 'pending' AND r.ready_at > p_now)
                   AND w.id IS NULL AS ready,
               w.concurrency_key AS w_key, w.holding AS w_holding,
               w.concurrency_limit AS w_limit
        FROM r LEFT JOIN w ON w.id = r.task_id
    )
    SELECT q.id, q.task_id, q.name, q.state,
           q.total = q.done,
           q.total, q.done,
           q.eligible,
           coalesce(q.attempts, 0), q.max_attempts, q.retryable,
           q.next_retry_at, q.last_attempted_at, q.last_failure_at, q.backoff_request_ms,
           q.ready, q.priority, q.not_before,
           CASE WHEN q.ready AND q.ready_at IS NOT NULL THEN
               (SELECT coalesce(sum(n.c), 0)::int
                FROM generate_series(q.priority + 1, 5) AS lane(p)
                CROSS JOIN LATERAL (
                    SELECT count(*) AS c FROM (
                        SELECT 1 FROM steps o
                        WHERE o.priority = lane.p
                          AND o.ready_at IS NOT NULL
                          AND o.ready_at <= least(p_now,
                                                  q.ready_at + interval '30 seconds' * (lane.p - q.priority))
                        LIMIT 1000) x) n)
           END,
           q.w_key, q.w_holding, q.w_limit
    FROM q;
END
$$;
