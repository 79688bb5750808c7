-- A cheaper hot path, and one round trip per hop: complete_and_claim_steps records a batch
-- of completions and, in the same call, claims up to N ready steps for the same worker (the
-- children it just released among them). Semantics are those of 0003: every outcome, refusal,
-- transition row, notification and task finalization is unchanged; only the work shrinks.
--
-- Where the server time went (perf on a backend running single-step claims and completions):
-- a third in planning. The hot statements take array parameters, so PL/pgSQL built a custom
-- plan on every call (a generic plan looked dearer for one row), and the LANGUAGE sql helpers
-- were parsed and planned on every call. Most of the rest was fixed cost per statement. So:
--  * claim_ready_steps and complete_and_claim_steps (complete_steps is a call of it) run with
--    generic plans, which cannot depend on an array's size: sequential and bitmap scans, hash
--    and merge joins are off, so every statement reads a table through an index or a ctid,
--    row by row (checked with auto_explain on 20k and 200k step tables); the in-memory sets
--    they join are small;
--  * the helpers are PL/pgSQL, and the hot functions inline them;
--  * fewer statements: settings are assigned (the expression fast path) rather than
--    PERFORMed; the steps' audit trigger writes and checks in one statement; the release of
--    children and the tasks' counters are one statement; the claim reads the tasks' states in
--    its own update and touches tasks only to start one; a batch of one task needs no
--    separate task lock.

-- Unchanged semantics (0003); PL/pgSQL so that its plans are cached per session.
CREATE OR REPLACE FUNCTION tasker_release_children(p_parent_ids bigint[], p_now timestamptz)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_ready int;
BEGIN
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
    SELECT (count(*) FILTER (WHERE u.ready))::int INTO v_ready FROM u;
    RETURN v_ready;
END
$$;

-- Unchanged semantics (0003); PL/pgSQL so that its plan is cached per session.
CREATE OR REPLACE FUNCTION tasker_finalize_tasks(p_task_ids bigint[], p_now timestamptz)
RETURNS TABLE (task_id bigint, state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH f AS (
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
    )
    SELECT f.id, f.state FROM f;
END
$$;

-- The same lock (steps and optionally their children, ascending id) as one index scan of
-- the primary key: the IN (... UNION ...) form of 0003 has a generic plan that reads the
-- whole steps table.
CREATE OR REPLACE FUNCTION tasker_lock_steps(p_ids bigint[], p_with_children boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_with_children THEN
        p_ids := p_ids || ARRAY(SELECT e.child_id FROM edges e WHERE e.parent_id = ANY (p_ids));
    END IF;
    PERFORM 1 FROM steps s WHERE s.id = ANY (p_ids) ORDER BY s.id FOR UPDATE;
END
$$;

-- The audit triggers of 0001, writing the same rows and raising the same errors. Hash joins
-- only: these plans are cached per session and must not turn quadratic when a session that
-- planned them for one row later updates hundreds (0001 left the choice to the planner).
--
-- Steps: one statement writes the transitions and finds the first illegal change; the error
-- then rolls the rows back with everything else. An update that changed no state (counters,
-- leases) runs it on empty sets.
CREATE OR REPLACE FUNCTION tasker_steps_audit() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_nestloop = off SET enable_hashjoin = on
SET enable_mergejoin = off AS $$
DECLARE
    v_bad bigint;
    bad record;
BEGIN
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

-- Tasks: an update that changed no state (counters) costs one query, which also finds the
-- first illegal change; only then are the transitions written (an insert into
-- task_transitions, even of no rows, runs the hooks trigger of 0005).
CREATE OR REPLACE FUNCTION tasker_tasks_audit() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_nestloop = off SET enable_hashjoin = on
SET enable_mergejoin = off AS $$
DECLARE
    v_changed int;
    v_bad bigint;
    bad record;
BEGIN
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

-- 0003's claim with generic plans. The rows picked are found again by ctid, not through the
-- primary key; the claim's own update reads its tasks' states, and tasks are locked and
-- updated (and their trigger run) only when the claim starts one; a step without parents
-- skips the parent-results lookup.
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
    v_set := set_config('tasker.reason', 'claim', true);
    v_set := set_config('synchronous_commit', 'off', true);

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
        SELECT array_agg(c.id), array_agg(c.ready_at), array_agg(c.ctid)
        INTO v_batch, v_batch_at, v_batch_tids
        FROM (SELECT s.id, s.ready_at, s.ctid
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
                FROM tasks t
                WHERE s.ctid = ANY (v_batch_tids) AND t.id = s.task_id
                -- The task's state is read, not locked: one seen pending is locked below.
                RETURNING s.ctid, s.task_id, t.state = 'pending' AS pending
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
        )
        SELECT array_agg(st.id) INTO v_started FROM st;
    END IF;

    RETURN QUERY
    SELECT s.id, s.task_id, s.claim_count::bigint, s.attempts + 1, s.max_attempts, s.name,
           ts.handler, ts.config, ts.limits, ts.grants, t.context,
           CASE WHEN cardinality(ts.parent_positions) = 0 THEN '{}'::jsonb
                ELSE coalesce((SELECT jsonb_object_agg(ps.name, ps.result)
                               FROM edges e JOIN steps ps ON ps.id = e.parent_id
                               WHERE e.child_id = s.id), '{}'::jsonb) END,
           tp.template_key, s.lease_expires_at, s.task_id = ANY (coalesce(v_started, '{}')),
           CASE WHEN ts.pin = 'sticky' AND s.claim_count > 1 THEN
               (SELECT a.plugin_hash FROM attempts a
                WHERE a.step_id = s.id AND a.plugin_hash IS NOT NULL
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

-- One hop in one round trip: complete_steps(p_step_ids ... p_plugin_hashes), then
-- claim_ready_steps(p_worker, p_claim_limit, p_lease) in the same transaction (none when
-- p_claim_limit is 0). The two parts are independent: a refused completion (stale token,
-- unknown step...) changes nothing and does not stop the claim, and the claim takes any ready
-- step, the children just released among them. Rows: first the completion outcomes, in input
-- order (claimed = false; the claim columns are null), then the claimed steps (claimed = true;
-- the completion columns are null), by step id. The transaction commits durably, claim
-- included. `tasker_ready` is notified only for released steps this call may have left
-- behind: a claim short of its limit took every claimable step.
CREATE FUNCTION complete_and_claim_steps(
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
    v_released int := 0;
    v_sync text;
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
        v_set := set_config('tasker.reason', 'complete', true);
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
                RETURNING c.ready_at IS NOT NULL AND c.unfinished_parents = 0 AS ready
            ), dt AS (
                SELECT x.tid, count(*)::int AS n FROM unnest(v_done_tasks) AS x(tid) GROUP BY x.tid
            ), cnt AS (
                UPDATE tasks t
                SET unfinished_steps = t.unfinished_steps - dt.n, updated_at = p_now
                FROM dt
                WHERE t.id = dt.tid
                RETURNING t.id, t.unfinished_steps, t.error_steps
            )
            SELECT (SELECT count(*) FILTER (WHERE rel.ready) FROM rel),
                   (SELECT array_agg(cnt.id) FILTER (WHERE cnt.unfinished_steps = 0 OR cnt.error_steps > 0)
                    FROM cnt)
            INTO v_released, v_candidates;
            IF v_candidates IS NOT NULL THEN
                v_set := set_config('tasker.reason', 'steps_finished', true);
                -- tasker_finalize_tasks(v_candidates, p_now)
                WITH f AS (
                    UPDATE tasks t
                    SET state = CASE WHEN t.unfinished_steps = 0 THEN 'complete' ELSE 'error' END,
                        finished_at = p_now,
                        updated_at = p_now
                    WHERE t.id = ANY (v_candidates)
                      AND t.state IN ('pending', 'in_progress')
                      AND (t.unfinished_steps = 0
                           OR (t.error_steps > 0
                               AND NOT EXISTS (SELECT 1 FROM steps s
                                               WHERE s.task_id = t.id
                                                 AND (s.state IN ('in_progress', 'waiting_for_retry')
                                                      OR s.ready_at IS NOT NULL))))
                    RETURNING t.id, t.state
                )
                SELECT array_agg(f.id), array_agg(f.state) INTO v_fin_ids, v_fin_states FROM f;
            END IF;
        END IF;

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
        -- claim_ready_steps commits asynchronously; the completions above must not.
        v_sync := current_setting('synchronous_commit');
        RETURN QUERY
        SELECT true, c.step_id, c.task_id, NULL::boolean, NULL::text, NULL::text, c.token,
               c.attempt, c.max_attempts, c.step_name, c.handler, c.config, c.limits, c.grants,
               c.context, c.parent_results, c.template_key, c.lease_expires_at, c.task_started,
               c.pinned_hash
        FROM claim_ready_steps(p_worker, p_claim_limit, p_lease, p_now) c;
        GET DIAGNOSTICS v_claimed = ROW_COUNT;
        v_set := set_config('synchronous_commit', v_sync, true);
    END IF;
    IF v_released > 0 AND (p_claim_limit = 0 OR v_claimed >= p_claim_limit) THEN
        PERFORM pg_notify('tasker_ready', v_released::text);
    END IF;
END
$$;

-- Unchanged semantics (0003); PL/pgSQL so that its plan is cached per session (an idle worker
-- asks after every empty claim), and that plan reads the claim queue's head, however small
-- the table was when it was made.
CREATE OR REPLACE FUNCTION next_ready_at() RETURNS timestamptz
LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
BEGIN
    RETURN (SELECT s.ready_at FROM steps s WHERE s.ready_at IS NOT NULL
            ORDER BY s.ready_at, s.id LIMIT 1);
END
$$;

-- 0003's contract: complete_and_claim_steps without a claim (it then notifies as 0003 did).
CREATE OR REPLACE FUNCTION complete_steps(
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
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT c.step_id, c.task_id, c.accepted, c.refusal, c.task_state
    FROM complete_and_claim_steps(p_step_ids, p_tokens, p_results, p_fuel, p_peak_memory_bytes,
                                  p_wall_us, p_plugin_hashes, NULL, 0, NULL, p_now) c;
END
$$;
