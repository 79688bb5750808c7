-- Retention (docs/store.md, "Retention"): one batch of the pruner. Deletes up to p_limit
-- finished tasks (state p_states[i], finished before p_cutoffs[i]; a template listed in
-- p_tpl_ids with a cutoff for that state uses its own, p_tpl_cutoffs[j]) with their steps,
-- edges, attempts (and so their logs), transitions, custom events and outbox rows; then,
-- with what is left of p_limit, delivered outbox rows of any task delivered before
-- p_delivered_before (NULL: none). A task with a step still in progress or claimable, or
-- with an undelivered (pending) outbox row, is kept for a later run. Tasks are locked FOR
-- UPDATE SKIP LOCKED and their state re-checked under the lock, so a concurrent retry wins.
-- One pruner at a time: the transaction-level advisory lock tasker_prune; when another
-- holds it the call changes nothing and answers busy. p_dry_run counts everything that a
-- run would remove (no limit, no lock) and deletes nothing. more: the batch was full.
CREATE OR REPLACE FUNCTION prune_finished(
    p_states text[], p_cutoffs timestamptz[],
    p_tpl_ids bigint[], p_tpl_states text[], p_tpl_cutoffs timestamptz[],
    p_delivered_before timestamptz, p_limit int, p_dry_run boolean
) RETURNS TABLE (
    busy boolean, more boolean, tasks bigint, steps bigint, edges bigint, attempts bigint,
    step_transitions bigint, task_transitions bigint, custom_events bigint,
    hook_outbox bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_limit int := CASE WHEN p_dry_run THEN NULL ELSE p_limit END;
    v_tasks bigint[];
    v_steps bigint[];
    v_edges bigint := 0;
    v_attempts bigint := 0;
    v_step_tr bigint := 0;
    v_task_tr bigint := 0;
    v_custom bigint := 0;
    v_outbox bigint := 0;
    v_delivered bigint := 0;
    v_n bigint;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_finished: p_limit must be at least 1, got %', p_limit
            USING ERRCODE = '22023';
    END IF;
    IF NOT p_dry_run AND NOT pg_try_advisory_xact_lock(hashtext('tasker_prune')) THEN
        RETURN QUERY SELECT true, false, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
                            0::bigint, 0::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;

    -- Candidates, oldest first per state through tasks_retention (state, finished_at); the
    -- LIMIT is inside each scan so that it stops early.
    WITH d AS (SELECT * FROM unnest(p_states, p_cutoffs) AS d(state, cutoff)),
         o AS (SELECT * FROM unnest(p_tpl_ids, p_tpl_states, p_tpl_cutoffs)
                         AS o(template_id, state, cutoff)),
         cand AS (
            SELECT c.id, c.cutoff FROM d CROSS JOIN LATERAL (
                SELECT t.id, d.cutoff FROM tasks t
                WHERE t.state = d.state AND t.finished_at < d.cutoff
                  AND NOT EXISTS (SELECT 1 FROM o
                                  WHERE o.template_id = t.template_id AND o.state = t.state)
                  AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.task_id = t.id
                                  AND (s.state = 'in_progress' OR s.ready_at IS NOT NULL))
                  AND NOT EXISTS (SELECT 1 FROM hook_outbox h
                                  WHERE h.task_id = t.id AND h.state = 'pending')
                ORDER BY t.finished_at LIMIT v_limit) c
            UNION ALL
            SELECT c.id, c.cutoff FROM o CROSS JOIN LATERAL (
                SELECT t.id, o.cutoff FROM tasks t
                WHERE t.state = o.state AND t.finished_at < o.cutoff
                  AND t.template_id = o.template_id
                  AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.task_id = t.id
                                  AND (s.state = 'in_progress' OR s.ready_at IS NOT NULL))
                  AND NOT EXISTS (SELECT 1 FROM hook_outbox h
                                  WHERE h.task_id = t.id AND h.state = 'pending')
                ORDER BY t.finished_at LIMIT v_limit) c
            LIMIT v_limit)
    SELECT array_agg(x.id) INTO v_tasks FROM (
        SELECT t.id FROM tasks t JOIN cand ON cand.id = t.id
        WHERE t.state IN ('complete', 'cancelled', 'error') AND t.finished_at < cand.cutoff
        ORDER BY t.id FOR UPDATE OF t SKIP LOCKED) x;
    v_tasks := coalesce(v_tasks, '{}');
    SELECT coalesce(array_agg(s.id), '{}') INTO v_steps FROM steps s
    WHERE s.task_id = ANY (v_tasks);

    IF p_dry_run THEN
        SELECT count(*) INTO v_edges FROM edges WHERE parent_id = ANY (v_steps);
        SELECT count(*) INTO v_attempts FROM attempts WHERE step_id = ANY (v_steps);
        SELECT count(*) INTO v_step_tr FROM step_transitions WHERE step_id = ANY (v_steps);
        SELECT count(*) INTO v_task_tr FROM task_transitions WHERE task_id = ANY (v_tasks);
        SELECT count(*) INTO v_custom FROM task_events_custom WHERE task_id = ANY (v_tasks);
        SELECT count(*) INTO v_outbox FROM hook_outbox WHERE task_id = ANY (v_tasks);
        IF p_delivered_before IS NOT NULL THEN
            SELECT count(*) INTO v_delivered FROM hook_outbox
            WHERE state = 'delivered' AND finished_at < p_delivered_before
              AND task_id <> ALL (v_tasks);
        END IF;
    ELSIF cardinality(v_tasks) > 0 THEN
        -- Children before parents: edges and steps reference steps, steps reference tasks.
        DELETE FROM edges WHERE parent_id = ANY (v_steps);
        GET DIAGNOSTICS v_edges = ROW_COUNT;
        DELETE FROM attempts WHERE step_id = ANY (v_steps);
        GET DIAGNOSTICS v_attempts = ROW_COUNT;
        DELETE FROM step_transitions WHERE step_id = ANY (v_steps);
        GET DIAGNOSTICS v_step_tr = ROW_COUNT;
        DELETE FROM task_events_custom WHERE task_id = ANY (v_tasks);
        GET DIAGNOSTICS v_custom = ROW_COUNT;
        DELETE FROM hook_outbox WHERE task_id = ANY (v_tasks);
        GET DIAGNOSTICS v_outbox = ROW_COUNT;
        DELETE FROM steps WHERE id = ANY (v_steps);
        DELETE FROM task_transitions WHERE task_id = ANY (v_tasks);
        GET DIAGNOSTICS v_task_tr = ROW_COUNT;
        DELETE FROM tasks WHERE id = ANY (v_tasks);
    END IF;

    v_n := cardinality(v_tasks);
    IF NOT p_dry_run AND p_delivered_before IS NOT NULL AND v_n < p_limit THEN
        -- Delivered rows through hook_outbox_delivered (finished_at); nothing reads a
        -- delivered row but listings and counts (docs/store.md, "Retention").
        DELETE FROM hook_outbox WHERE id IN (
            SELECT h.id FROM hook_outbox h
            WHERE h.state = 'delivered' AND h.finished_at < p_delivered_before
            ORDER BY h.finished_at LIMIT p_limit - v_n);
        GET DIAGNOSTICS v_delivered = ROW_COUNT;
    END IF;

    RETURN QUERY SELECT false, NOT p_dry_run AND v_n + v_delivered >= p_limit, v_n,
                        cardinality(v_steps)::bigint, v_edges, v_attempts, v_step_tr,
                        v_task_tr, v_custom, v_outbox + v_delivered;
END
$$;
