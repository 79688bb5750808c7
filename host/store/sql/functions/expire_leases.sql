-- Return in_progress steps whose lease expired before p_now (up to p_limit, oldest lease
-- first). A lease loss does not count against max_attempts: the step goes back to
-- waiting_for_retry, claimable at once. The max_lease_losses-th loss ends it in error, so a
-- step that kills its workers cannot loop forever.
CREATE OR REPLACE FUNCTION expire_leases(p_now timestamptz DEFAULT now(), p_limit int DEFAULT 1000)
RETURNS TABLE (
    step_id bigint,
    task_id bigint,
    worker text,
    token bigint,
    state text,
    lease_losses int,
    task_state text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_step_tasks bigint[];
    v_workers text[];
    v_tokens int[];
    v_states text[];
    v_losses int[];
    v_tasks bigint[];
    v_ready int := 0;
    v_errors int := 0;
    v_fin_ids bigint[];
    v_fin_states text[];
BEGIN
    PERFORM set_config('tasker.reason', 'lease_expired', true);
    SELECT array_agg(x.id ORDER BY x.id) INTO v_ids
    FROM (SELECT s.id FROM steps s
          WHERE s.lease_expires_at IS NOT NULL AND s.lease_expires_at < p_now
          ORDER BY s.lease_expires_at, s.id
          LIMIT p_limit) x;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    -- Lock in id order, skipping steps a completer is working on right now.
    SELECT array_agg(s.id ORDER BY s.id) INTO v_ids
    FROM (SELECT s.id FROM steps s
          WHERE s.id = ANY (v_ids) AND s.state = 'in_progress' AND s.lease_expires_at < p_now
          ORDER BY s.id
          FOR UPDATE SKIP LOCKED) s;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    WITH u AS (
        UPDATE steps s
        SET state = CASE WHEN s.lease_losses + 1 >= s.max_lease_losses
                         THEN 'error' ELSE 'waiting_for_retry' END,
            lease_losses = s.lease_losses + 1,
            ready_at = CASE WHEN s.lease_losses + 1 >= s.max_lease_losses THEN NULL ELSE p_now END,
            backoff_request_ms = 0,
            lease_expires_at = NULL,
            last_failure_at = p_now,
            last_error_kind = 'lease_lost',
            finished_at = CASE WHEN s.lease_losses + 1 >= s.max_lease_losses THEN p_now END,
            updated_at = p_now
        WHERE s.id = ANY (v_ids)
        RETURNING s.id, s.task_id, s.worker, s.claim_count, s.state, s.lease_losses,
                  s.max_lease_losses, s.last_attempted_at, s.ready_at
    ), a AS (
        INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at,
                              outcome, error_kind, message, retryable, decision, next_ready_at)
        SELECT u.id, u.claim_count, u.task_id, u.worker, u.last_attempted_at, p_now,
               'lease_lost', 'lease_lost',
               format('lease expired (loss %s of %s allowed)', u.lease_losses, u.max_lease_losses),
               u.state = 'waiting_for_retry',
               CASE WHEN u.state = 'error' THEN 'exhausted' ELSE 'retry' END,
               u.ready_at
        FROM u
    )
    SELECT array_agg(u.id), array_agg(u.task_id), array_agg(u.worker), array_agg(u.claim_count),
           array_agg(u.state), array_agg(u.lease_losses),
           count(*) FILTER (WHERE u.state = 'waiting_for_retry'),
           count(*) FILTER (WHERE u.state = 'error')
    INTO v_ids, v_step_tasks, v_workers, v_tokens, v_states, v_losses, v_ready, v_errors
    FROM u;

    SELECT array_agg(DISTINCT t) INTO v_tasks FROM unnest(v_step_tasks) t;
    IF v_errors > 0 THEN
        PERFORM tasker_lock_tasks(v_tasks);
        UPDATE tasks t
        SET error_steps = t.error_steps + x.n, updated_at = p_now
        FROM (SELECT s.task_id, count(*)::int AS n FROM steps s
              WHERE s.id = ANY (v_ids) AND s.state = 'error'
              GROUP BY s.task_id) x
        WHERE t.id = x.task_id;
        SELECT array_agg(f.task_id), array_agg(f.state) INTO v_fin_ids, v_fin_states
        FROM tasker_finalize_tasks(v_tasks, p_now) f;
    END IF;
    IF v_ready > 0 THEN
        PERFORM pg_notify('tasker_ready', v_ready::text);
    END IF;

    RETURN QUERY
    SELECT x.id, x.task_id, x.worker, x.token::bigint, x.state, x.losses, fin.state
    FROM unnest(v_ids, v_step_tasks, v_workers, v_tokens, v_states, v_losses)
         AS x(id, task_id, worker, token, state, losses)
    LEFT JOIN unnest(v_fin_ids, v_fin_states) AS fin(task_id, state) ON fin.task_id = x.task_id
    ORDER BY x.id;
END
$$;
