-- The hot path: claim, complete, fail, heartbeat, lease expiry, release.
--
-- Lock order, everywhere: step rows in ascending id (a batch and the children it touches are
-- locked together by one ORDER BY id FOR UPDATE), then task rows in ascending id. The claim
-- and the lease sweeper use SKIP LOCKED on steps, so they never wait on a step. Nothing
-- locks a step after a task, so concurrent batches cannot deadlock.
--
-- Refused items (stale fencing token, step not in_progress, unknown step, duplicate in the
-- batch) change nothing and are reported back.

-- Finalize tasks after their steps changed: complete when no unfinished step is left;
-- error when a step is in error and nothing else can move (no in_progress, no
-- waiting_for_retry, no claimable step). Callers hold the task rows locked.
CREATE FUNCTION tasker_finalize_tasks(p_task_ids bigint[], p_now timestamptz)
RETURNS TABLE (task_id bigint, state text)
LANGUAGE sql AS $$
    UPDATE tasks t
    SET state = CASE WHEN t.unfinished_steps = 0 THEN 'complete' ELSE 'error' END,
        finished_at = p_now,
        updated_at = p_now
    WHERE t.id = ANY (p_task_ids)
      AND t.state IN ('pending', 'in_progress')
      AND (t.unfinished_steps = 0
           OR (t.error_steps > 0
               AND NOT EXISTS (SELECT 1 FROM steps s
                               WHERE s.task_id = t.id
                                 AND (s.state IN ('in_progress', 'waiting_for_retry')
                                      OR s.ready_at IS NOT NULL))))
    RETURNING t.id, t.state
$$;

-- Release the children of steps that just became complete / resolved_manually: decrement
-- their counters and make those reaching zero claimable now. Returns how many became ready.
-- Callers hold the children locked.
CREATE FUNCTION tasker_release_children(p_parent_ids bigint[], p_now timestamptz)
RETURNS int
LANGUAGE sql AS $$
    WITH d AS (
        SELECT e.child_id, count(*)::int AS n
        FROM edges e
        WHERE e.parent_id = ANY (p_parent_ids)
        GROUP BY e.child_id
    ), u AS (
        UPDATE steps c
        SET unfinished_parents = c.unfinished_parents - d.n,
            ready_at = CASE WHEN c.state IN ('pending', 'waiting_for_retry')
                                 AND c.unfinished_parents = d.n
                            THEN p_now ELSE c.ready_at END,
            updated_at = p_now
        FROM d
        WHERE c.id = d.child_id
        RETURNING c.ready_at IS NOT NULL AND c.unfinished_parents = 0 AS ready
    )
    SELECT (count(*) FILTER (WHERE u.ready))::int FROM u
$$;

-- Lock steps (and optionally their children) in ascending id order.
CREATE FUNCTION tasker_lock_steps(p_ids bigint[], p_with_children boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_with_children THEN
        PERFORM 1 FROM steps s
        WHERE s.id IN (SELECT unnest(p_ids)
                       UNION
                       SELECT e.child_id FROM edges e WHERE e.parent_id = ANY (p_ids))
        ORDER BY s.id
        FOR UPDATE;
    ELSE
        PERFORM 1 FROM steps s WHERE s.id = ANY (p_ids) ORDER BY s.id FOR UPDATE;
    END IF;
END
$$;

CREATE FUNCTION tasker_lock_tasks(p_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM tasks t WHERE t.id = ANY (p_ids) ORDER BY t.id FOR UPDATE;
END
$$;

CREATE FUNCTION tasker_check_lengths(p_what text, p_n int, VARIADIC p_lens int[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    i int;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_lens, 1), 0) LOOP
        IF p_lens[i] IS NOT NULL AND p_lens[i] <> p_n THEN
            RAISE EXCEPTION '%: array argument % has % elements, expected % (one per step id)',
                p_what, i + 1, p_lens[i], p_n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END
$$;

-- Why an item of a batch was refused, given the step's state now.
CREATE FUNCTION tasker_refusal(p_state text, p_claim_count int, p_token bigint, p_duplicate boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_duplicate THEN 'duplicate_in_batch'
        WHEN p_state IS NULL THEN 'unknown_step'
        WHEN p_state = 'cancelled' THEN 'cancelled'
        WHEN p_claim_count IS DISTINCT FROM p_token THEN 'stale_token'
        WHEN p_state <> 'in_progress' THEN 'not_in_progress'
        ELSE 'refused'
    END
$$;

-- Claim up to p_limit ready steps in one statement. Each returned step carries everything a
-- worker needs, and its fencing token (the new claim_count). task_started: this claim moved
-- the step's task from pending to in_progress. pinned_hash: for a step pinned `sticky`, the
-- plugin hash its first attempt ran, so every retry runs the same code.
--
-- The claim commits asynchronously (synchronous_commit off): a claim lost in a server crash
-- only leaves the step claimable again, and the worker's result then presents a stale token
-- and is refused, so nothing is lost or done twice in the store. Results commit durably.
CREATE FUNCTION claim_ready_steps(
    p_worker text, p_limit int, p_lease interval, p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    step_id bigint,
    task_id bigint,
    token bigint,
    attempt int,
    max_attempts int,
    step_name text,
    handler text,
    config jsonb,
    limits jsonb,
    grants jsonb,
    context jsonb,
    parent_results jsonb,
    template_key text,
    lease_expires_at timestamptz,
    task_started boolean,
    pinned_hash text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_tasks bigint[];
    v_started bigint[];
    v_after_at timestamptz;
    v_after_id bigint;
    v_claims int;
    v_last_at timestamptz;
    v_last_id bigint;
BEGIN
    IF p_worker IS NULL OR p_worker = '' THEN
        RAISE EXCEPTION 'claim_ready_steps: worker must be a non-empty name'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'claim_ready_steps: limit must be >= 1, got %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'claim_ready_steps: lease must be positive, got %', p_lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('tasker.reason', 'claim', true);
    PERFORM set_config('synchronous_commit', 'off', true);

    -- Every claim leaves dead entries at the head of steps_claim_queue until vacuum, and a
    -- scan from the head would walk all of them: the claim would slow down as the backlog
    -- drains. So each session remembers where its last full claim ended and scans on from
    -- there. A claim that finds fewer than p_limit steps, and every 64th claim, scans from
    -- the head again, so a step that became ready behind the cursor waits at most that long.
    v_after_at := nullif(current_setting('tasker.claim_after_at', true), '')::timestamptz;
    v_after_id := nullif(current_setting('tasker.claim_after_id', true), '')::bigint;
    v_claims := coalesce(nullif(current_setting('tasker.claim_scans', true), '')::int, 0);
    IF v_after_at IS NULL OR v_claims >= 64 OR v_after_at > p_now THEN
        v_after_at := '-infinity';
        v_after_id := 0;
        v_claims := 0;
    END IF;

    v_ids := '{}';
    v_tasks := '{}';
    LOOP
        WITH c AS (
            SELECT s.id, s.ready_at
            FROM steps s
            WHERE s.ready_at IS NOT NULL AND s.ready_at <= p_now
              AND (s.ready_at, s.id) > (v_after_at, v_after_id)
            ORDER BY s.ready_at, s.id
            LIMIT p_limit - cardinality(v_ids)
            FOR UPDATE SKIP LOCKED
        ), u AS (
            UPDATE steps s
            SET state = 'in_progress',
                ready_at = NULL,
                claim_count = s.claim_count + 1,
                worker = p_worker,
                last_attempted_at = p_now,
                lease_expires_at = p_now + p_lease,
                updated_at = p_now
            FROM c
            WHERE s.id = c.id
            RETURNING s.id, s.task_id, c.ready_at AS queued_at
        )
        SELECT v_ids || coalesce(array_agg(u.id), '{}'),
               v_tasks || coalesce(array_agg(DISTINCT u.task_id), '{}'),
               (array_agg(u.queued_at ORDER BY u.queued_at DESC, u.id DESC))[1],
               (array_agg(u.id ORDER BY u.queued_at DESC, u.id DESC))[1]
        INTO v_ids, v_tasks, v_last_at, v_last_id
        FROM u;
        -- Short from the cursor: look again from the head for the rest.
        EXIT WHEN cardinality(v_ids) >= p_limit OR v_after_at = '-infinity';
        v_after_at := '-infinity';
        v_after_id := 0;
        v_claims := 0;
    END LOOP;

    IF cardinality(v_ids) < p_limit THEN
        PERFORM set_config('tasker.claim_after_at', '', false);
    ELSE
        PERFORM set_config('tasker.claim_after_at', v_last_at::text, false);
        PERFORM set_config('tasker.claim_after_id', v_last_id::text, false);
        PERFORM set_config('tasker.claim_scans', (v_claims + 1)::text, false);
    END IF;

    IF cardinality(v_ids) = 0 THEN
        RETURN;
    END IF;

    -- A task's first claim starts it.
    PERFORM 1 FROM tasks t WHERE t.id = ANY (v_tasks) AND t.state = 'pending'
    ORDER BY t.id FOR UPDATE;
    WITH st AS (
        UPDATE tasks t
        SET state = 'in_progress', started_at = coalesce(t.started_at, p_now), updated_at = p_now
        WHERE t.id = ANY (v_tasks) AND t.state = 'pending'
        RETURNING t.id
    )
    SELECT array_agg(st.id) INTO v_started FROM st;

    RETURN QUERY
    SELECT s.id, s.task_id, s.claim_count::bigint, s.attempts + 1, s.max_attempts, s.name,
           ts.handler, ts.config, ts.limits, ts.grants, t.context,
           coalesce((SELECT jsonb_object_agg(ps.name, ps.result)
                     FROM edges e JOIN steps ps ON ps.id = e.parent_id
                     WHERE e.child_id = s.id), '{}'::jsonb),
           tp.template_key, s.lease_expires_at, s.task_id = ANY (coalesce(v_started, '{}')),
           CASE WHEN ts.pin = 'sticky' AND s.claim_count > 1 THEN
               (SELECT a.plugin_hash FROM attempts a
                WHERE a.step_id = s.id AND a.plugin_hash IS NOT NULL
                ORDER BY a.attempt_no LIMIT 1)
           END
    FROM steps s
    JOIN tasks t ON t.id = s.task_id
    JOIN templates tp ON tp.id = t.template_id
    JOIN template_steps ts ON ts.template_id = t.template_id AND ts.position = s.position
    WHERE s.id = ANY (v_ids)
    ORDER BY s.id;
END
$$;

-- Complete a batch of claimed steps. One call: attempts rows, transitions (trigger),
-- children released, tasks finalized, one NOTIFY.
CREATE FUNCTION complete_steps(
    p_step_ids bigint[],
    p_tokens bigint[],
    p_results jsonb[],
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
    task_state text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_n int := coalesce(cardinality(p_step_ids), 0);
    v_done bigint[];
    v_tasks bigint[];
    v_ready int := 0;
    v_fin_ids bigint[];
    v_fin_states text[];
BEGIN
    PERFORM tasker_check_lengths('complete_steps', v_n, cardinality(p_tokens), cardinality(p_results),
        cardinality(p_fuel), cardinality(p_peak_memory_bytes), cardinality(p_wall_us),
        cardinality(p_plugin_hashes));
    IF v_n = 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('tasker.reason', 'complete', true);
    PERFORM tasker_lock_steps(p_step_ids, true);

    WITH items AS (
        SELECT DISTINCT ON (x.sid) x.*
        FROM unnest(p_step_ids, p_tokens, p_results, p_fuel, p_peak_memory_bytes, p_wall_us,
                    p_plugin_hashes) WITH ORDINALITY
             AS x(sid, tok, res, fuel, mem, wall, hash, ord)
        ORDER BY x.sid, x.ord
    ), u AS (
        UPDATE steps s
        SET state = 'complete',
            result = coalesce(i.res, 'null'::jsonb),
            attempts = s.attempts + 1,
            lease_expires_at = NULL,
            finished_at = p_now,
            updated_at = p_now
        FROM items i
        WHERE s.id = i.sid AND s.state = 'in_progress' AND s.claim_count = i.tok
        RETURNING s.id, s.task_id, s.claim_count, s.worker, s.last_attempted_at,
                  i.fuel, i.mem, i.wall, i.hash
    ), a AS (
        INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at,
                              outcome, fuel, peak_memory_bytes, wall_us, plugin_hash)
        SELECT u.id, u.claim_count, u.task_id, u.worker, u.last_attempted_at, p_now,
               'completed', u.fuel, u.mem, u.wall, u.hash
        FROM u
    )
    SELECT array_agg(u.id), array_agg(DISTINCT u.task_id) INTO v_done, v_tasks FROM u;

    IF v_done IS NOT NULL THEN
        v_ready := tasker_release_children(v_done, p_now);
        PERFORM tasker_lock_tasks(v_tasks);
        UPDATE tasks t
        SET unfinished_steps = t.unfinished_steps - x.n, updated_at = p_now
        FROM (SELECT s.task_id, count(*)::int AS n FROM steps s WHERE s.id = ANY (v_done)
              GROUP BY s.task_id) x
        WHERE t.id = x.task_id;
        PERFORM set_config('tasker.reason', 'steps_finished', true);
        SELECT array_agg(f.task_id), array_agg(f.state) INTO v_fin_ids, v_fin_states
        FROM tasker_finalize_tasks(v_tasks, p_now) f;
    END IF;
    IF v_ready > 0 THEN
        PERFORM pg_notify('tasker_ready', v_ready::text);
    END IF;

    RETURN QUERY
    SELECT x.sid, s.task_id, x.sid = ANY (coalesce(v_done, '{}')) AND x.first,
           CASE WHEN x.sid = ANY (coalesce(v_done, '{}')) AND x.first THEN NULL
                ELSE tasker_refusal(s.state, s.claim_count, x.tok, NOT x.first) END,
           CASE WHEN x.sid = ANY (coalesce(v_done, '{}')) AND x.first THEN fin.state END
    FROM (SELECT y.sid, y.tok, y.ord,
                 row_number() OVER (PARTITION BY y.sid ORDER BY y.ord) = 1 AS first
          FROM unnest(p_step_ids, p_tokens) WITH ORDINALITY AS y(sid, tok, ord)) x
    LEFT JOIN steps s ON s.id = x.sid
    LEFT JOIN unnest(v_fin_ids, v_fin_states) AS fin(task_id, state) ON fin.task_id = s.task_id
    ORDER BY x.ord;
END
$$;

-- Fail a batch of claimed steps. Per accepted item: attempts + 1, then
--   retry      (failure retryable, step retryable, attempts < max_attempts): waiting_for_retry,
--              ready_at = now + (retry_after capped at max_retry_after_ms, else the backoff);
--   permanent  (failure or step not retryable): error;
--   exhausted  (no attempts left): error.
-- Tasks with nothing left to move go to error.
CREATE FUNCTION fail_steps(
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
               CASE WHEN NOT (coalesce(i.retryable, false) AND s.retryable) THEN 'permanent'
                    WHEN s.attempts + 1 >= s.max_attempts THEN 'exhausted'
                    ELSE 'retry' END AS decision,
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

-- Extend the leases of steps this worker holds. Fenced: the token must be current and the
-- step still in_progress under this worker.
CREATE FUNCTION heartbeat_steps(
    p_worker text, p_step_ids bigint[], p_tokens bigint[], p_lease interval,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (step_id bigint, accepted boolean, lease_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM tasker_check_lengths('heartbeat_steps', coalesce(cardinality(p_step_ids), 0),
        cardinality(p_tokens));
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'heartbeat_steps: lease must be positive, got %', p_lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM tasker_lock_steps(p_step_ids, false);
    RETURN QUERY
    WITH u AS (
        UPDATE steps s
        SET lease_expires_at = p_now + p_lease, updated_at = p_now
        FROM unnest(p_step_ids, p_tokens) AS i(sid, tok)
        WHERE s.id = i.sid AND s.state = 'in_progress' AND s.claim_count = i.tok
          AND s.worker = p_worker
        RETURNING s.id, s.lease_expires_at
    )
    SELECT i.sid, u.id IS NOT NULL, u.lease_expires_at
    FROM unnest(p_step_ids) WITH ORDINALITY AS i(sid, ord)
    LEFT JOIN u ON u.id = i.sid
    ORDER BY i.ord;
END
$$;

-- Return in_progress steps whose lease expired before p_now (up to p_limit, oldest lease
-- first). A lease loss does not count against max_attempts: the step goes back to
-- waiting_for_retry, claimable at once. The max_lease_losses-th loss ends it in error, so a
-- step that kills its workers cannot loop forever.
CREATE FUNCTION expire_leases(p_now timestamptz DEFAULT now(), p_limit int DEFAULT 1000)
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

-- Give back claimed steps (graceful shutdown): in_progress -> waiting_for_retry, claimable at
-- once, with no attempt or lease loss counted. Fenced like a completion.
CREATE FUNCTION release_steps(
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

-- The earliest ready_at in the claim queue (now or in the future): when a worker with nothing
-- to do should look again, NOTIFY aside.
CREATE FUNCTION next_ready_at() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT s.ready_at FROM steps s WHERE s.ready_at IS NOT NULL ORDER BY s.ready_at, s.id LIMIT 1
$$;
