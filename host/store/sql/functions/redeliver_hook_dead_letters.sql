-- Put dead letters back into delivery: the dead rows p_ids (each must be a dead row, of
-- p_hook_id if that is given, else 22023 names the first that is not and nothing is
-- written), or else every dead row of p_hook_id, or of every hook when both are NULL. Each
-- is replaced by a new pending row of the same event (hook, task, step, name, attempt,
-- payload, event_at), with no attempts, due at p_now, and deleted. The new row draws the
-- next id, so it is delivered after every row its (hook, task) already has, by the same
-- claim and finish as any other; it is the head exactly as tasker_hook_enqueue decides: when
-- no other row of its (hook, task) is pending. The tasks' rows are locked first (ascending
-- id, FOR UPDATE; no step is locked), as an enqueue locks them (tasker_hook_lock_tasks) and
-- finish_hook_deliveries share-locks them to move a head on, so neither can race the head
-- check, and a task's outbox ids keep following commit order. Only rows of tasks locked here
-- are taken (a row that died meanwhile under another task's lock is left for the next call).
-- Returns one row per redelivered row, by old id.
CREATE OR REPLACE FUNCTION redeliver_hook_dead_letters(
    p_hook_id bigint DEFAULT NULL, p_ids bigint[] DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (old_id bigint, new_id bigint, hook_id bigint, task_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_tasks bigint[];
    v_ids bigint[];
    v_bad record;
    v_row record;
BEGIN
    IF p_ids IS NOT NULL THEN
        SELECT array_agg(x.id) INTO v_tasks FROM (
            SELECT t.id FROM tasks t
            WHERE t.id IN (SELECT o.task_id FROM hook_outbox o WHERE o.id = ANY (p_ids))
            ORDER BY t.id FOR UPDATE OF t) x;
        SELECT array_agg(x.id) INTO v_ids FROM (
            SELECT o.id FROM hook_outbox o
            WHERE o.id = ANY (p_ids) AND o.state = 'dead' AND o.task_id = ANY (v_tasks)
              AND (p_hook_id IS NULL OR o.hook_id = p_hook_id)
            ORDER BY o.id FOR UPDATE OF o) x;
        -- Checked under the locks: a row another call redelivered meanwhile is gone.
        SELECT x.id, o.state, o.hook_id INTO v_bad
        FROM unnest(p_ids) WITH ORDINALITY AS x(id, ord)
        LEFT JOIN hook_outbox o ON o.id = x.id
        WHERE x.id <> ALL (coalesce(v_ids, '{}'))
        ORDER BY x.ord
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION '%', CASE
                WHEN v_bad.state IS NULL
                    THEN format('hook delivery %s does not exist', v_bad.id)
                WHEN v_bad.state <> 'dead'
                    THEN format('hook delivery %s is %s, not dead', v_bad.id, v_bad.state)
                WHEN v_bad.hook_id <> p_hook_id
                    THEN format('hook delivery %s is of hook %s, not of hook %s', v_bad.id,
                                v_bad.hook_id, p_hook_id)
                ELSE format('hook delivery %s is not a dead letter', v_bad.id) END
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        SELECT array_agg(x.id) INTO v_tasks FROM (
            SELECT t.id FROM tasks t
            WHERE t.id IN (SELECT o.task_id FROM hook_outbox o
                           WHERE o.state = 'dead'
                             AND (p_hook_id IS NULL OR o.hook_id = p_hook_id))
            ORDER BY t.id FOR UPDATE OF t) x;
        SELECT array_agg(x.id) INTO v_ids FROM (
            SELECT o.id FROM hook_outbox o
            WHERE o.state = 'dead' AND o.task_id = ANY (v_tasks)
              AND (p_hook_id IS NULL OR o.hook_id = p_hook_id)
            ORDER BY o.id FOR UPDATE OF o) x;
    END IF;

    -- One row at a time, by old id: each head check sees the rows inserted before it, as
    -- row_number() = 1 does in tasker_hook_enqueue.
    FOR v_row IN
        SELECT o.* FROM hook_outbox o WHERE o.id = ANY (v_ids) ORDER BY o.id
    LOOP
        INSERT INTO hook_outbox (hook_id, task_id, step_id, step_name, event_name, attempt,
                                 payload, event_at, next_attempt_at, head)
        VALUES (v_row.hook_id, v_row.task_id, v_row.step_id, v_row.step_name,
                v_row.event_name, v_row.attempt, v_row.payload, v_row.event_at, p_now,
                NOT EXISTS (SELECT 1 FROM hook_outbox p
                            WHERE p.hook_id = v_row.hook_id AND p.task_id = v_row.task_id
                              AND p.state = 'pending'))
        RETURNING id INTO new_id;
        old_id := v_row.id;
        hook_id := v_row.hook_id;
        task_id := v_row.task_id;
        RETURN NEXT;
    END LOOP;
    DELETE FROM hook_outbox o WHERE o.id = ANY (v_ids);
END
$$;
