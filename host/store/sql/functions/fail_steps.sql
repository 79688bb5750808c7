-- Fail a batch of claimed steps. Per accepted item: attempts + 1, then
--   retry      (failure retryable, step retryable, attempts < max_attempts): waiting_for_retry,
--              ready_at = now + (retry_after capped at max_retry_after_ms, else the backoff);
--   permanent  (failure or step not retryable): error;
--   exhausted  (no attempts left): error.
-- Tasks with nothing left to move go to error.
CREATE OR REPLACE FUNCTION fail_steps(
    p_step_ids bigint[],
    p_tokens bigint[],
    p_error_kinds text[],
    p_messages text[],
    p_retryable boolean[],
    p_retry_after_ms bigint[] DEFAULT NULL,
    p_fuel bigint[] DEFAULT NULL,
    p_peak_memory_bytes bigint[] DEFAULT NULL,
    p_wall_us bigint[] DEFAULT NULL,
    p_plugin_hashes text[] DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    step_id bigint,
    task_id bigint,
    accepted boolean,
    refusal text,
    decision text,
    next_ready_at timestamptz,
    task_state text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_n int := coalesce(cardinality(p_step_ids), 0);
    v_done bigint[];
    v_decisions text[];
    v_ready_at timestamptz[];
    v_tasks bigint[];
    v_ready_now int := 0;
    v_next_due timestamptz;
    v_fin_ids bigint[];
    v_fin_states text[];
BEGIN
    PERFORM tasker_check_lengths('fail_steps', v_n, cardinality(p_tokens), cardinality(p_error_kinds),
        cardinality(p_messages), cardinality(p_retryable), cardinality(p_retry_after_ms),
        cardinality(p_fuel), cardinality(p_peak_memory_bytes), cardinality(p_wall_us),
        cardinality(p_plugin_hashes));
    IF v_n = 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('tasker.reason', 'fail', true);
    PERFORM tasker_lock_steps(p_step_ids, false);

    WITH items AS (
        SELECT DISTINCT ON (x.sid) x.*
        FROM unnest(p_step_ids, p_tokens, p_error_kinds, p_messages, p_retryable, p_retry_after_ms,
                    p_fuel, p_peak_memory_bytes, p_wall_us, p_plugin_hashes) WITH ORDINALITY
             AS x(sid, tok, kind, msg, retryable, retry_after, fuel, mem, wall, hash, ord)
        ORDER BY x.sid, x.ord
    ), d AS (
        SELECT s.id, i.*,
               tasker_retry_decision(i.retryable, s.retryable, s.attempts, s.max_attempts)
                   AS decision,
               CASE WHEN i.retry_after IS NOT NULL
                    THEN least(greatest(i.retry_after, 0), s.max_retry_after_ms) END AS requested,
               tasker_backoff_ms(s.backoff_base_ms, s.backoff_multiplier, s.backoff_cap_ms,
                                 s.backoff_jitter, s.id, s.attempts + 1) AS backoff
        FROM steps s JOIN items i ON i.sid = s.id
        WHERE s.state = 'in_progress' AND s.claim_count = i.tok
    ), u AS (
        UPDATE steps s
        SET state = CASE WHEN d.decision = 'retry' THEN 'waiting_for_retry' ELSE 'error' END,
            attempts = s.attempts + 1,
            ready_at = CASE WHEN d.decision = 'retry'
                            THEN p_now + tasker_ms(coalesce(d.requested, d.backoff)) END,
            backoff_request_ms = CASE WHEN d.decision = 'retry' THEN d.requested END,
            lease_expires_at = NULL,
            last_failure_at = p_now,
            last_error_kind = coalesce(d.kind, 'unknown'),
            finished_at = CASE WHEN d.decision = 'retry' THEN NULL ELSE p_now END,
            updated_at = p_now
        FROM d
        WHERE s.id = d.id
        RETURNING s.id, s.task_id, s.claim_count, s.worker, s.last_attempted_at, s.ready_at,
                  d.decision, d.kind, d.msg, d.retryable, d.fuel, d.mem, d.wall, d.hash
    ), a AS (
        INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at,
                              outcome, error_kind, message, retryable, decision, next_ready_at,
                              fuel, peak_memory_bytes, wall_us, plugin_hash)
        SELECT u.id, u.claim_count, u.task_id, u.worker, u.last_attempted_at, p_now,
               'failed', coalesce(u.kind, 'unknown'), u.msg, u.retryable, u.decision, u.ready_at,
               u.fuel, u.mem, u.wall, u.hash
        FROM u
    )
    SELECT array_agg(u.id), array_agg(u.decision), array_agg(u.ready_at),
           array_agg(DISTINCT u.task_id),
           count(*) FILTER (WHERE u.ready_at <= p_now),
           min(u.ready_at) FILTER (WHERE u.ready_at > p_now)
    INTO v_done, v_decisions, v_ready_at, v_tasks, v_ready_now, v_next_due
    FROM u;

    IF v_done IS NOT NULL THEN
        PERFORM tasker_lock_tasks(v_tasks);
        UPDATE tasks t
        SET error_steps = t.error_steps + x.n, updated_at = p_now
        FROM (SELECT s.task_id, count(*)::int AS n FROM steps s
              WHERE s.id = ANY (v_done) AND s.state = 'error'
              GROUP BY s.task_id) x
        WHERE t.id = x.task_id;
        PERFORM set_config('tasker.reason', 'step_failed', true);
        SELECT array_agg(f.task_id), array_agg(f.state) INTO v_fin_ids, v_fin_states
        FROM tasker_finalize_tasks(v_tasks, p_now) f;
    END IF;
    IF v_ready_now > 0 THEN
        PERFORM pg_notify('tasker_ready', v_ready_now::text);
    END IF;
    -- A retry due later: idle workers learn when to look again (payload: the instant).
    IF v_next_due IS NOT NULL THEN
        PERFORM pg_notify('tasker_due', v_next_due::text);
    END IF;

    RETURN QUERY
    SELECT x.sid, s.task_id, acc.id IS NOT NULL AND x.first,
           CASE WHEN acc.id IS NOT NULL AND x.first THEN NULL
                ELSE tasker_refusal(s.state, s.claim_count, x.tok, NOT x.first) END,
           CASE WHEN x.first THEN acc.decision END,
           CASE WHEN x.first THEN acc.ready_at END,
           CASE WHEN acc.id IS NOT NULL AND x.first THEN fin.state END
    FROM (SELECT y.sid, y.tok, y.ord,
                 row_number() OVER (PARTITION BY y.sid ORDER BY y.ord) = 1 AS first
          FROM unnest(p_step_ids, p_tokens) WITH ORDINALITY AS y(sid, tok, ord)) x
    LEFT JOIN steps s ON s.id = x.sid
    LEFT JOIN unnest(v_done, v_decisions, v_ready_at) AS acc(id, decision, ready_at)
           ON acc.id = x.sid
    LEFT JOIN unnest(v_fin_ids, v_fin_states) AS fin(task_id, state) ON fin.task_id = s.task_id
    ORDER BY x.ord;
END
$$;
