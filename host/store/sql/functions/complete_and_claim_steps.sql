-- One hop in one round trip: complete_steps(p_step_ids ... p_plugin_hashes), then
-- claim_ready_steps(p_worker, p_claim_limit, p_lease) in the same transaction (none when
-- p_claim_limit is 0). The two parts are independent: a refused completion changes nothing
-- and does not stop the claim, which takes any ready step, the children just released among
-- them. Rows: the completion outcomes in input order (claimed = false), then the claimed
-- steps by id (claimed = true). NOTIFY tasker_ready only for released steps this call may
-- have left behind. Writes its own transition rows; why it looks the way it does:
-- docs/store.md ("complete_and_claim_steps"). With p_task_id the claim takes only that
-- task's steps (claim_ready_steps' p_task_id).
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
    p_now timestamptz DEFAULT now(),
    -- What each attempt said (attempts.logs); NULL, or a NULL element, for nothing.
    p_logs jsonb[] DEFAULT NULL,
    p_task_id bigint DEFAULT NULL
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
       OR cardinality(p_wall_us) <> v_n OR cardinality(p_plugin_hashes) <> v_n
       OR cardinality(p_logs) <> v_n THEN
        PERFORM tasker_check_lengths('complete_steps', v_n, cardinality(p_tokens),
            cardinality(p_results), cardinality(p_fuel), cardinality(p_peak_memory_bytes),
            cardinality(p_wall_us), cardinality(p_plugin_hashes),
            cardinality(p_logs));
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
                        p_plugin_hashes, p_logs) WITH ORDINALITY
                 AS x(sid, tok, res, fuel, mem, wall, hash, logs, ord)
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
                      i.fuel, i.mem, i.wall, i.hash, i.logs
        ), a AS (
            INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at,
                                  outcome, fuel, peak_memory_bytes, wall_us, plugin_hash, logs)
            SELECT u.id, u.claim_count, u.task_id, u.worker, u.last_attempted_at, p_now,
                   'completed', u.fuel, u.mem, u.wall, u.hash, u.logs
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
                    SET state = tasker_finalize_decision(
                            t.state, t.unfinished_steps, t.error_steps,
                            EXISTS (SELECT 1 FROM steps s
                                    WHERE s.task_id = t.id
                                      AND (s.state IN ('in_progress', 'waiting_for_retry')
                                           OR s.ready_at IS NOT NULL))),
                        finished_at = p_now,
                        updated_at = p_now
                    FROM unnest(v_candidates, v_cand_states) AS c(id, state)
                    WHERE t.id = c.id
                      AND tasker_finalize_decision(
                            t.state, t.unfinished_steps, t.error_steps,
                            EXISTS (SELECT 1 FROM steps s
                                    WHERE s.task_id = t.id
                                      AND (s.state IN ('in_progress', 'waiting_for_retry')
                                           OR s.ready_at IS NOT NULL))) IS NOT NULL
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
        FROM claim_ready_steps(p_worker, p_claim_limit, p_lease, p_now, p_task_id) c;
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
