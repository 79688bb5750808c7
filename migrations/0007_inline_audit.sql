-- The hot path writes its own audit rows. Until now every state change reached
-- step_transitions / task_transitions through the statement triggers of 0001 (0006's form);
-- with one step per call they were a third of a hop's server time (pgbench, a linear 4-step
-- task claimed and completed one hop at a time: 4.4 ms with them, 3.1 ms with them doing
-- nothing), mostly the fixed cost of a trigger call and of its statements on a batch of one.
-- claim_ready_steps and complete_and_claim_steps now write the same rows (same sort keys,
-- metadata, times and most_recent flags) in the statements that change the states, and set
-- the transaction-local setting tasker.audited to 'on' meanwhile; the triggers return at once
-- when it is on. Every other writer of states (fail, expire, release, cancel, retry, resolve,
-- and any UPDATE by hand) still goes through the triggers, which still refuse illegal
-- transitions. The hot functions make only legal ones by construction: each names its source
-- states in its WHERE clause, and each is listed in step_state_transitions /
-- task_state_transitions (the agreement and audit tests check the rows written).
--
-- Also: a claim commits durably (see claim_ready_steps); a fused hop notifies only for
-- released steps its own claim left behind; and a sticky step's pin starts again after a
-- task retry (the first attempt since the retry sets it).

-- 0006's trigger functions, skipped while a hot function audits itself.
CREATE OR REPLACE FUNCTION tasker_steps_audit() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_nestloop = off SET enable_hashjoin = on
SET enable_mergejoin = off AS $$
DECLARE
    v_bad bigint;
    bad record;
BEGIN
    -- The hot functions write their own transitions (see the top of this file).
    IF current_setting('tasker.audited', true) = 'on' THEN
        RETURN NULL;
    END IF;
    WITH changed AS (
        SELECT n.id, o.state AS from_state, n.state AS to_state, a.from_state IS NULL AS illegal,
               jsonb_strip_nulls(jsonb_build_object(
                   'reason', nullif(current_setting('tasker.reason', true), ''),
                   'worker', n.worker,
                   'attempt', n.claim_count,
                   'error_kind', CASE WHEN n.state IN ('waiting_for_retry', 'error')
                                      THEN n.last_error_kind END)) AS metadata,
               n.updated_at AS at
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        LEFT JOIN step_state_transitions a ON a.from_state = o.state AND a.to_state = n.state
        WHERE o.state <> n.state
    ), prev AS (
        UPDATE step_transitions t SET most_recent = false
        WHERE t.most_recent AND t.step_id = ANY (ARRAY(SELECT c.id FROM changed c))
        RETURNING t.step_id, t.sort_key
    ), ins AS (
        INSERT INTO step_transitions (step_id, sort_key, from_state, to_state, metadata,
                                      most_recent, created_at)
        SELECT c.id, coalesce(p.sort_key, 0) + 1, c.from_state, c.to_state, c.metadata, true, c.at
        FROM changed c LEFT JOIN prev p ON p.step_id = c.id
    )
    SELECT min(c.id) FILTER (WHERE c.illegal) INTO v_bad FROM changed c;
    IF v_bad IS NOT NULL THEN
        SELECT o.id, o.state AS from_state, n.state AS to_state INTO bad
        FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE n.id = v_bad;
        RAISE EXCEPTION 'illegal step transition % -> % (step %)', bad.from_state, bad.to_state, bad.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tasker_tasks_audit() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_nestloop = off SET enable_hashjoin = on
SET enable_mergejoin = off AS $$
DECLARE
    v_changed int;
    v_bad bigint;
    bad record;
BEGIN
    -- The hot functions write their own transitions (see the top of this file).
    IF current_setting('tasker.audited', true) = 'on' THEN
        RETURN NULL;
    END IF;
    SELECT count(*), min(n.id) FILTER (WHERE a.from_state IS NULL) INTO v_changed, v_bad
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    LEFT JOIN task_state_transitions a ON a.from_state = o.state AND a.to_state = n.state
    WHERE o.state <> n.state;
    IF v_changed = 0 THEN
        RETURN NULL;
    END IF;
    IF v_bad IS NOT NULL THEN
        SELECT o.id, o.state AS from_state, n.state AS to_state INTO bad
        FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE n.id = v_bad;
        RAISE EXCEPTION 'illegal task transition % -> % (task %)', bad.from_state, bad.to_state, bad.id
            USING ERRCODE = 'check_violation';
    END IF;

    WITH changed AS (
        SELECT n.id, o.state AS from_state, n.state AS to_state,
               jsonb_strip_nulls(jsonb_build_object(
                   'reason', nullif(current_setting('tasker.reason', true), ''))) AS metadata,
               n.updated_at AS at
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.state <> n.state
    ), prev AS (
        UPDATE task_transitions t SET most_recent = false
        WHERE t.most_recent AND t.task_id = ANY (ARRAY(SELECT c.id FROM changed c))
        RETURNING t.task_id, t.sort_key
    )
    INSERT INTO task_transitions (task_id, sort_key, from_state, to_state, metadata, most_recent, created_at)
    SELECT c.id, coalesce(p.sort_key, 0) + 1, c.from_state, c.to_state, c.metadata, true, c.at
    FROM changed c LEFT JOIN prev p ON p.task_id = c.id;
    RETURN NULL;
END
$$;

-- 0006's claim, writing its transitions.
CREATE OR REPLACE FUNCTION claim_ready_steps(
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
    v_audited text;
    -- Where the claimed rows are now (their new versions), for the result.
    v_tids tid[];
    v_pending bigint[];
    v_started bigint[];
    v_after_at timestamptz;
    v_after_id bigint;
    v_claims int;
    v_last_at timestamptz;
    v_last_id bigint;
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

    -- The per-session cursor of 0003 (see there).
    v_after_at := nullif(current_setting('tasker.claim_after_at', true), '')::timestamptz;
    v_after_id := nullif(current_setting('tasker.claim_after_id', true), '')::bigint;
    v_claims := coalesce(nullif(current_setting('tasker.claim_scans', true), '')::int, 0);
    IF v_after_at IS NULL OR v_claims >= 64 OR v_after_at > p_now THEN
        v_after_at := '-infinity';
        v_after_id := 0;
        v_claims := 0;
    END IF;

    v_ids := '{}';
    v_pending := '{}';
    v_tids := '{}';
    LOOP
        -- Pick, then update the rows picked (locked: their ctid cannot change meanwhile).
        -- A generic plan of the one-statement form of 0003 (LIMIT unknown) hashes the whole
        -- steps table.
        -- In the subquery's order: the last one taken is where this scan ended.
        SELECT array_agg(c.id), array_agg(c.ready_at), array_agg(c.ctid), array_agg(c.state)
        INTO v_batch, v_batch_at, v_batch_tids, v_batch_states
        FROM (SELECT s.id, s.ready_at, s.ctid, s.state
              FROM steps s
              WHERE s.ready_at IS NOT NULL AND s.ready_at <= p_now
                AND (s.ready_at, s.id) > (v_after_at, v_after_id)
              ORDER BY s.ready_at, s.id
              LIMIT p_limit - cardinality(v_ids)
              FOR UPDATE SKIP LOCKED) c;
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
            -- Where this scan ended: the greatest (ready_at, id) it took.
            v_last_at := v_batch_at[cardinality(v_batch_at)];
            v_last_id := v_batch[cardinality(v_batch)];
        END IF;
        -- Short from the cursor: look again from the head for the rest.
        EXIT WHEN cardinality(v_ids) >= p_limit OR v_after_at = '-infinity';
        v_after_at := '-infinity';
        v_after_id := 0;
        v_claims := 0;
    END LOOP;

    IF cardinality(v_ids) < p_limit THEN
        v_set := set_config('tasker.claim_after_at', '', false);
    ELSE
        v_set := set_config('tasker.claim_after_at', v_last_at::text, false);
        v_set := set_config('tasker.claim_after_id', v_last_id::text, false);
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

-- 0006's hop, writing its transitions.
CREATE OR REPLACE FUNCTION complete_and_claim_steps(
    p_step_ids bigint[],
    p_tokens bigint[],
    p_results jsonb[],
    p_fuel bigint[],
    p_peak_memory_bytes bigint[],
    p_wall_us bigint[],
    p_plugin_hashes text[],
    p_worker text,
    p_claim_limit int,
    p_lease interval,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    claimed boolean,
    step_id bigint,
    task_id bigint,
    accepted boolean,
    refusal text,
    task_state text,
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
    v_n int := coalesce(cardinality(p_step_ids), 0);
    v_done bigint[];
    v_done_tasks bigint[];
    v_candidates bigint[];
    v_fin_ids bigint[];
    v_fin_states text[];
    v_cand_states text[];
    v_audited text;
    v_released int := 0;
    v_released_ids bigint[];
    v_left int := 0;
    v_claimed int := 0;
    v_set text;
BEGIN
    IF p_claim_limit IS NULL OR p_claim_limit < 0 THEN
        RAISE EXCEPTION 'complete_and_claim_steps: claim limit must be >= 0, got %', p_claim_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The claim's arguments are checked before anything is recorded.
    IF p_claim_limit > 0 AND (p_worker IS NULL OR p_worker = '') THEN
        RAISE EXCEPTION 'complete_and_claim_steps: worker must be a non-empty name'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_claim_limit > 0 AND (p_lease IS NULL OR p_lease <= interval '0') THEN
        RAISE EXCEPTION 'complete_and_claim_steps: lease must be positive, got %', p_lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- tasker_check_lengths raises the error; only called when there is one.
    IF cardinality(p_tokens) <> v_n OR cardinality(p_results) <> v_n
       OR cardinality(p_fuel) <> v_n OR cardinality(p_peak_memory_bytes) <> v_n
       OR cardinality(p_wall_us) <> v_n OR cardinality(p_plugin_hashes) <> v_n THEN
        PERFORM tasker_check_lengths('complete_steps', v_n, cardinality(p_tokens),
            cardinality(p_results), cardinality(p_fuel), cardinality(p_peak_memory_bytes),
            cardinality(p_wall_us), cardinality(p_plugin_hashes));
    END IF;

    -- The completions: complete_steps of 0003, outcome for outcome.
    IF v_n > 0 THEN
        v_audited := current_setting('tasker.audited', true);
        v_set := set_config('tasker.audited', 'on', true);
        -- The steps and their children, ascending id (tasker_lock_steps(p_step_ids, true)).
        PERFORM 1 FROM steps s
        WHERE s.id = ANY (p_step_ids || ARRAY(SELECT e.child_id FROM edges e
                                              WHERE e.parent_id = ANY (p_step_ids)))
        ORDER BY s.id
        FOR UPDATE;

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
        ), prev AS (
            UPDATE step_transitions tr SET most_recent = false
            WHERE tr.most_recent AND tr.step_id = ANY (ARRAY(SELECT u.id FROM u))
            RETURNING tr.step_id, tr.sort_key
        ), audit AS (
            INSERT INTO step_transitions (step_id, sort_key, from_state, to_state, metadata,
                                          most_recent, created_at)
            SELECT g.id, max(g.k) + 1, 'in_progress', 'complete',
                   jsonb_strip_nulls(jsonb_build_object('reason', 'complete',
                                                        'worker', max(g.worker),
                                                        'attempt', max(g.attempt))),
                   true, p_now
            FROM (SELECT u.id, 0 AS k, u.worker, u.claim_count AS attempt FROM u
                  UNION ALL
                  SELECT p.step_id, p.sort_key, NULL, NULL FROM prev p) g
            GROUP BY g.id
        )
        SELECT array_agg(u.id), array_agg(u.task_id) INTO v_done, v_done_tasks FROM u;

        IF v_done IS NOT NULL THEN
            -- Tasks in id order after the steps (tasker_lock_tasks). A lone task is locked by
            -- the update below, and the statements after it see it as locked; the steps this
            -- update touches are locked already.
            IF NOT v_done_tasks[1] = ALL (v_done_tasks) THEN
                PERFORM 1 FROM tasks t WHERE t.id = ANY (v_done_tasks) ORDER BY t.id FOR UPDATE;
            END IF;
            -- Release the children (tasker_release_children(v_done, p_now); they were locked
            -- above) and count the steps off their tasks: only a task left with no unfinished
            -- step, or with a step in error, can finish.
            WITH d AS (
                SELECT e.child_id, count(*)::int AS n
                FROM edges e
                WHERE e.parent_id = ANY (v_done)
                GROUP BY e.child_id
            ), rel AS (
                UPDATE steps c
                SET unfinished_parents = c.unfinished_parents - d.n,
                    ready_at = CASE WHEN c.state IN ('pending', 'waiting_for_retry')
                                         AND c.unfinished_parents = d.n
                                    THEN p_now ELSE c.ready_at END,
                    updated_at = p_now
                FROM d
                WHERE c.id = d.child_id
                RETURNING c.id, c.ready_at IS NOT NULL AND c.unfinished_parents = 0 AS ready
            ), dt AS (
                SELECT x.tid, count(*)::int AS n FROM unnest(v_done_tasks) AS x(tid) GROUP BY x.tid
            ), cnt AS (
                UPDATE tasks t
                SET unfinished_steps = t.unfinished_steps - dt.n, updated_at = p_now
                FROM dt
                WHERE t.id = dt.tid
                RETURNING t.id, t.state, t.unfinished_steps, t.error_steps
            ), cand AS (
                SELECT cnt.id, cnt.state FROM cnt WHERE cnt.unfinished_steps = 0 OR cnt.error_steps > 0
            )
            SELECT (SELECT array_agg(rel.id) FILTER (WHERE rel.ready) FROM rel),
                   (SELECT array_agg(cand.id) FROM cand), (SELECT array_agg(cand.state) FROM cand)
            INTO v_released_ids, v_candidates, v_cand_states;
            v_released := coalesce(cardinality(v_released_ids), 0);
            IF v_candidates IS NOT NULL THEN
                -- tasker_finalize_tasks(v_candidates, p_now); c.state is the state before.
                WITH f AS (
                    UPDATE tasks t
                    SET state = CASE WHEN t.unfinished_steps = 0 THEN 'complete' ELSE 'error' END,
                        finished_at = p_now,
                        updated_at = p_now
                    FROM unnest(v_candidates, v_cand_states) AS c(id, state)
                    WHERE t.id = c.id
                      AND t.state IN ('pending', 'in_progress')
                      AND (t.unfinished_steps = 0
                           OR (t.error_steps > 0
                               AND NOT EXISTS (SELECT 1 FROM steps s
                                               WHERE s.task_id = t.id
                                                 AND (s.state IN ('in_progress', 'waiting_for_retry')
                                                      OR s.ready_at IS NOT NULL))))
                    RETURNING t.id, c.state AS from_state, t.state
                ), prev AS (
                    UPDATE task_transitions tr SET most_recent = false
                    WHERE tr.most_recent AND tr.task_id = ANY (ARRAY(SELECT f.id FROM f))
                    RETURNING tr.task_id, tr.sort_key
                ), audit AS (
                    -- pending / in_progress -> complete / error (the update's WHERE).
                    INSERT INTO task_transitions (task_id, sort_key, from_state, to_state,
                                                  metadata, most_recent, created_at)
                    SELECT g.id, max(g.k) + 1, max(g.from_state), max(g.state),
                           '{"reason": "steps_finished"}'::jsonb, true, p_now
                    FROM (SELECT f.id, 0 AS k, f.from_state, f.state FROM f
                          UNION ALL
                          SELECT p.task_id, p.sort_key, NULL, NULL FROM prev p) g
                    GROUP BY g.id
                )
                SELECT array_agg(f.id), array_agg(f.state) INTO v_fin_ids, v_fin_states FROM f;
            END IF;
        END IF;
        v_set := set_config('tasker.audited', coalesce(v_audited, ''), true);

        RETURN QUERY
        SELECT false, x.sid, s.task_id, x.ok,
               CASE WHEN x.ok THEN NULL
                    ELSE tasker_refusal(s.state, s.claim_count, x.tok, NOT x.first) END,
               CASE WHEN x.ok THEN fin.state END,
               NULL::bigint, NULL::int, NULL::int, NULL::text, NULL::text, NULL::jsonb, NULL::jsonb,
               NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::text, NULL::timestamptz, NULL::boolean,
               NULL::text
        FROM (SELECT y.*, y.first AND y.sid = ANY (coalesce(v_done, '{}')) AS ok
              FROM (SELECT z.sid, z.tok, z.ord,
                           row_number() OVER (PARTITION BY z.sid ORDER BY z.ord) = 1 AS first
                    FROM unnest(p_step_ids, p_tokens) WITH ORDINALITY AS z(sid, tok, ord)) y) x
        LEFT JOIN steps s ON s.id = x.sid
        LEFT JOIN unnest(v_fin_ids, v_fin_states) AS fin(task_id, state) ON fin.task_id = s.task_id
        ORDER BY x.ord;
    END IF;

    IF p_claim_limit > 0 THEN
        RETURN QUERY
        SELECT true, c.step_id, c.task_id, NULL::boolean, NULL::text, NULL::text, c.token,
               c.attempt, c.max_attempts, c.step_name, c.handler, c.config, c.limits, c.grants,
               c.context, c.parent_results, c.template_key, c.lease_expires_at, c.task_started,
               c.pinned_hash
        FROM claim_ready_steps(p_worker, p_claim_limit, p_lease, p_now) c;
        GET DIAGNOSTICS v_claimed = ROW_COUNT;
    END IF;
    -- Other workers are woken only for released steps left behind. The released steps are
    -- locked by this transaction, so only its own claim can have taken them: 0006 notified
    -- whenever the claim was full, and so woke an idle worker on every hop of a chain.
    IF v_released > 0 THEN
        IF p_claim_limit = 0 THEN
            v_left := v_released;
        ELSIF v_claimed >= p_claim_limit THEN
            SELECT count(*) INTO v_left FROM steps s
            WHERE s.id = ANY (v_released_ids) AND s.ready_at IS NOT NULL;
        END IF;
    END IF;
    IF v_left > 0 THEN
        PERFORM pg_notify('tasker_ready', v_left::text);
    END IF;
END
$$;
