-- Claim up to p_limit ready steps (the heads of steps_claim_queue, SKIP LOCKED) for p_worker
-- under a lease of p_lease: pending | waiting_for_retry -> in_progress, claim_count + 1 (the
-- fencing token), ready_at cleared. Each row carries everything a worker needs. task_started:
-- this claim moved the task from pending to in_progress. pinned_hash: for a `sticky` step,
-- the plugin hash of its first attempt since the last task retry.
-- Order: smallest tasker_claim_key first (priority with aging, tasker_core::priority). The
-- queue holds each priority's steps in ready order, so one statement takes up to p_limit
-- from the head of each priority (an empty one costs one index probe) and keeps the best
-- p_limit by key; the others stay ready (locked until this transaction ends).
-- Writes its own transition rows (tasker.audited), commits durably, scans on from a
-- per-session cursor per priority, and runs with generic plans: docs/store.md
-- ("claim_ready_steps").
-- With p_task_id, only that task's steps, from the head (a worker scoped to its task, as
-- `tasker run` starts): its own statement, so the unscoped claim's plan is unchanged, and
-- the cursor is neither read nor moved.
CREATE OR REPLACE FUNCTION claim_ready_steps(
    p_worker text, p_limit int, p_lease interval, p_now timestamptz DEFAULT now(),
    p_task_id bigint DEFAULT NULL
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
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET enable_bitmapscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_batch bigint[];
    v_batch_at timestamptz[];
    v_batch_tids tid[];
    v_batch_states text[];
    v_batch_prio int[];
    v_audited text;
    -- Where the claimed rows are now (their new versions), for the result.
    v_tids tid[];
    v_pending bigint[];
    v_started bigint[];
    -- The cursor, per priority (index 1..5).
    v_after_at timestamptz[];
    v_after_id bigint[];
    v_fresh boolean;
    v_claims int;
    -- The last scan's steps (priority, ready_at, id): where the cursor goes.
    v_taken_prio int[];
    v_taken_at timestamptz[];
    v_taken_ids bigint[];
    v_set text;
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
    -- A claim commits durably now (0003 turned synchronous_commit off for it). A claim lost
    -- in a server crash hands the step's next claim the same token, so the lost claim's
    -- worker, still running the step, could complete it in the new holder's name.
    v_audited := current_setting('tasker.audited', true);
    v_set := set_config('tasker.audited', 'on', true);

    -- The per-session cursor of 0003 (see there), one per priority since 0020.
    v_after_at := nullif(current_setting('tasker.claim_after_ats', true), '')::timestamptz[];
    v_after_id := nullif(current_setting('tasker.claim_after_ids', true), '')::bigint[];
    v_claims := coalesce(nullif(current_setting('tasker.claim_scans', true), '')::int, 0);
    v_fresh := v_after_at IS NULL OR v_claims >= 64 OR p_task_id IS NOT NULL
               OR (SELECT max(a) FROM unnest(v_after_at) a) > p_now;
    IF v_fresh THEN
        v_after_at := array_fill('-infinity'::timestamptz, ARRAY[5]);
        v_after_id := array_fill(0::bigint, ARRAY[5]);
        v_claims := 0;
    END IF;

    v_ids := '{}';
    v_pending := '{}';
    v_tids := '{}';
    v_taken_prio := '{}';
    v_taken_at := '{}';
    v_taken_ids := '{}';
    LOOP
        -- Pick, then update the rows picked (locked: their ctid cannot change meanwhile).
        -- A generic plan of the one-statement form of 0003 (LIMIT unknown) hashes the whole
        -- steps table.
        IF p_task_id IS NULL THEN
            -- The head of each priority (from its cursor), merged by claim key.
            SELECT array_agg(c.id ORDER BY c.k, c.id), array_agg(c.ready_at ORDER BY c.k, c.id),
                   array_agg(c.ctid ORDER BY c.k, c.id), array_agg(c.state ORDER BY c.k, c.id),
                   array_agg(c.priority ORDER BY c.k, c.id)
            INTO v_batch, v_batch_at, v_batch_tids, v_batch_states, v_batch_prio
            FROM (SELECT h.*, tasker_claim_key(h.ready_at, h.priority) AS k
                  FROM unnest('{5,4,3,2,1}'::int[]) AS lane(p)
                  CROSS JOIN LATERAL (
                      SELECT s.id, s.ready_at, s.ctid, s.state, s.priority
                      FROM steps s
                      WHERE s.priority = lane.p
                        AND s.ready_at IS NOT NULL AND s.ready_at <= p_now
                        AND (s.ready_at, s.id) > (v_after_at[lane.p], v_after_id[lane.p])
                      ORDER BY s.ready_at, s.id
                      LIMIT p_limit - cardinality(v_ids)
                      FOR UPDATE SKIP LOCKED) h
                  ORDER BY k, h.id
                  LIMIT p_limit - cardinality(v_ids)) c;
        ELSE
            -- The task's steps through its (task_id, name) index.
            SELECT array_agg(c.id), array_agg(c.ready_at), array_agg(c.ctid), array_agg(c.state),
                   array_agg(c.priority)
            INTO v_batch, v_batch_at, v_batch_tids, v_batch_states, v_batch_prio
            FROM (SELECT s.id, s.ready_at, s.ctid, s.state, s.priority
                  FROM steps s
                  WHERE s.task_id = p_task_id
                    AND s.ready_at IS NOT NULL AND s.ready_at <= p_now
                  ORDER BY tasker_claim_key(s.ready_at, s.priority), s.id
                  LIMIT p_limit
                  FOR UPDATE SKIP LOCKED) c;
        END IF;
        IF v_batch IS NOT NULL THEN
            WITH u AS (
                UPDATE steps s
                SET state = 'in_progress',
                    ready_at = NULL,
                    claim_count = s.claim_count + 1,
                    worker = p_worker,
                    last_attempted_at = p_now,
                    lease_expires_at = p_now + p_lease,
                    updated_at = p_now
                FROM unnest(v_batch_tids, v_batch_states) AS b(tid, from_state), tasks t
                WHERE s.ctid = b.tid AND t.id = s.task_id
                -- The task's state is read, not locked: one seen pending is locked below.
                RETURNING s.ctid, s.id, s.task_id, s.claim_count, b.from_state,
                          t.state = 'pending' AS pending
            ), prev AS (
                UPDATE step_transitions tr SET most_recent = false
                WHERE tr.most_recent AND tr.step_id = ANY (ARRAY(SELECT u.id FROM u))
                RETURNING tr.step_id, tr.sort_key
            ), audit AS (
                -- pending / waiting_for_retry -> in_progress: the queue holds no other state
                -- (CHECK steps_ready_at).
                INSERT INTO step_transitions (step_id, sort_key, from_state, to_state, metadata,
                                              most_recent, created_at)
                SELECT g.id, max(g.k) + 1, max(g.from_state), 'in_progress',
                       jsonb_build_object('reason', 'claim', 'worker', p_worker,
                                          'attempt', max(g.attempt)),
                       true, p_now
                FROM (SELECT u.id, 0 AS k, u.from_state, u.claim_count AS attempt FROM u
                      UNION ALL
                      SELECT p.step_id, p.sort_key, NULL, NULL FROM prev p) g
                GROUP BY g.id
            )
            SELECT v_pending || coalesce(array_agg(u.task_id) FILTER (WHERE u.pending), '{}'),
                   v_tids || array_agg(u.ctid)
            INTO v_pending, v_tids
            FROM u;
            v_ids := v_ids || v_batch;
            v_taken_prio := v_batch_prio;
            v_taken_at := v_batch_at;
            v_taken_ids := v_batch;
        END IF;
        -- Short from the cursor: look again from the head for the rest.
        EXIT WHEN cardinality(v_ids) >= p_limit OR v_fresh;
        v_fresh := true;
        v_after_at := array_fill('-infinity'::timestamptz, ARRAY[5]);
        v_after_id := array_fill(0::bigint, ARRAY[5]);
        v_claims := 0;
    END LOOP;

    IF p_task_id IS NOT NULL THEN
        NULL;
    ELSIF cardinality(v_ids) < p_limit THEN
        v_set := set_config('tasker.claim_after_ats', '', false);
    ELSE
        -- Where each priority's last scan ended: the greatest (ready_at, id) it took there
        -- (a priority it took nothing from keeps its place).
        SELECT array_agg(coalesce(m.at, v_after_at[lane.p]) ORDER BY lane.p),
               array_agg(coalesce(m.id, v_after_id[lane.p]) ORDER BY lane.p)
        INTO v_after_at, v_after_id
        FROM unnest('{1,2,3,4,5}'::int[]) AS lane(p)
        LEFT JOIN LATERAL (
            SELECT t.at, t.id FROM unnest(v_taken_prio, v_taken_at, v_taken_ids) AS t(p, at, id)
            WHERE t.p = lane.p ORDER BY t.at DESC, t.id DESC LIMIT 1) m ON true;
        v_set := set_config('tasker.claim_after_ats', v_after_at::text, false);
        v_set := set_config('tasker.claim_after_ids', v_after_id::text, false);
        v_set := set_config('tasker.claim_scans', (v_claims + 1)::text, false);
    END IF;

    IF cardinality(v_ids) = 0 THEN
        v_set := set_config('tasker.audited', coalesce(v_audited, ''), true);
        RETURN;
    END IF;

    -- A task's first claim starts it. Locked first, so the state read is the one updated.
    IF cardinality(v_pending) > 0 THEN
        PERFORM 1 FROM tasks t WHERE t.id = ANY (v_pending) ORDER BY t.id FOR UPDATE;
        WITH st AS (
            UPDATE tasks t
            SET state = 'in_progress', started_at = coalesce(t.started_at, p_now), updated_at = p_now
            WHERE t.id = ANY (v_pending) AND t.state = 'pending'
            RETURNING t.id
        ), prev AS (
            UPDATE task_transitions tr SET most_recent = false
            WHERE tr.most_recent AND tr.task_id = ANY (ARRAY(SELECT st.id FROM st))
            RETURNING tr.task_id, tr.sort_key
        ), audit AS (
            INSERT INTO task_transitions (task_id, sort_key, from_state, to_state, metadata,
                                          most_recent, created_at)
            SELECT g.id, max(g.k) + 1, 'pending', 'in_progress', '{"reason": "claim"}'::jsonb,
                   true, p_now
            FROM (SELECT st.id, 0 AS k FROM st
                  UNION ALL
                  SELECT p.task_id, p.sort_key FROM prev p) g
            GROUP BY g.id
        )
        SELECT array_agg(st.id) INTO v_started FROM st;
    END IF;
    v_set := set_config('tasker.audited', coalesce(v_audited, ''), true);

    RETURN QUERY
    SELECT s.id, s.task_id, s.claim_count::bigint, s.attempts + 1, s.max_attempts, s.name,
           ts.handler, ts.config, ts.limits, ts.grants, t.context,
           CASE WHEN cardinality(ts.parent_positions) = 0 THEN '{}'::jsonb
                ELSE coalesce((SELECT jsonb_object_agg(ps.name, ps.result)
                               FROM edges e JOIN steps ps ON ps.id = e.parent_id
                               WHERE e.child_id = s.id), '{}'::jsonb) END,
           tp.template_key, s.lease_expires_at, s.task_id = ANY (coalesce(v_started, '{}')),
           -- Since 0007 a task retry (error -> pending) starts a new pin: the fix an
           -- operator deployed before retrying must be able to run.
           CASE WHEN ts.pin = 'sticky' AND s.claim_count > 1 THEN
               (SELECT a.plugin_hash FROM attempts a
                WHERE a.step_id = s.id AND a.plugin_hash IS NOT NULL
                  AND a.attempt_no > coalesce(
                      (SELECT max((tr.metadata->>'attempt')::int) FROM step_transitions tr
                       WHERE tr.step_id = s.id AND tr.from_state = 'error'
                         AND tr.to_state = 'pending'), 0)
                ORDER BY a.attempt_no LIMIT 1)
           END
    FROM steps s
    JOIN tasks t ON t.id = s.task_id
    JOIN templates tp ON tp.id = t.template_id
    -- Planned on its own (OFFSET 0), the lookup uses the primary key; as a join on a small
    -- template_steps, the planner read all of a template's steps for each claimed step.
    CROSS JOIN LATERAL (SELECT x.handler, x.config, x.limits, x.grants, x.pin, x.parent_positions
                        FROM template_steps x
                        WHERE x.template_id = t.template_id AND x.position = s.position
                        OFFSET 0) ts
    WHERE s.ctid = ANY (v_tids)
    ORDER BY s.id;
END
$$;
