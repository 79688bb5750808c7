-- Give back claimed steps (graceful shutdown): in_progress -> waiting_for_retry, claimable at
-- once, with no attempt or lease loss counted. Fenced like a completion.
CREATE OR REPLACE FUNCTION release_steps(
    p_worker text, p_step_ids bigint[], p_tokens bigint[], p_now timestamptz DEFAULT now()
) RETURNS TABLE (step_id bigint, accepted boolean, refusal text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_done bigint[];
BEGIN
    PERFORM tasker_check_lengths('release_steps', coalesce(cardinality(p_step_ids), 0),
        cardinality(p_tokens));
    PERFORM set_config('tasker.reason', 'released', true);
    PERFORM tasker_lock_steps(p_step_ids, false);
    WITH u AS (
        UPDATE steps s
        SET state = 'waiting_for_retry',
            ready_at = p_now,
            backoff_request_ms = 0,
            lease_expires_at = NULL,
            last_failure_at = p_now,
            last_error_kind = 'released',
            updated_at = p_now
        FROM (SELECT DISTINCT ON (x.sid) x.sid, x.tok
              FROM unnest(p_step_ids, p_tokens) WITH ORDINALITY AS x(sid, tok, ord)
              ORDER BY x.sid, x.ord) i
        WHERE s.id = i.sid AND s.state = 'in_progress' AND s.claim_count = i.tok
          AND s.worker = p_worker
        RETURNING s.id, s.task_id, s.claim_count, s.worker, s.last_attempted_at
    ), a AS (
        INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at,
                              outcome, error_kind, message, next_ready_at)
        SELECT u.id, u.claim_count, u.task_id, u.worker, u.last_attempted_at, p_now,
               'released', 'released', 'released by its worker', p_now
        FROM u
    )
    SELECT array_agg(u.id) INTO v_done FROM u;
    IF v_done IS NOT NULL THEN
        PERFORM pg_notify('tasker_ready', cardinality(v_done)::text);
    END IF;

    RETURN QUERY
    SELECT x.sid, x.sid = ANY (coalesce(v_done, '{}')) AND x.first,
           CASE WHEN x.sid = ANY (coalesce(v_done, '{}')) AND x.first THEN NULL
                WHEN s.worker IS DISTINCT FROM p_worker AND s.state = 'in_progress'
                     AND s.claim_count = x.tok THEN 'other_worker'
                ELSE tasker_refusal(s.state, s.claim_count, x.tok, NOT x.first) END
    FROM (SELECT y.sid, y.tok, y.ord,
                 row_number() OVER (PARTITION BY y.sid ORDER BY y.ord) = 1 AS first
          FROM unnest(p_step_ids, p_tokens) WITH ORDINALITY AS y(sid, tok, ord)) x
    LEFT JOIN steps s ON s.id = x.sid
    ORDER BY x.ord;
END
$$;
