-- Create a task from a registered template. With an identity key, a second create in the
-- same namespace returns the first task and created = false.
-- p_priority: the task's (else the template's, else 3); a step's own priority in the
-- template wins over it. p_run_at: its first steps are ready at that instant, not before.
-- A template with `concurrency` gives the task a key (tasker_concurrency_key) and admits it
-- by tasker_core::concurrency: it holds a slot now, waits in its key's line (its first steps
-- not ready), cancels the oldest unfinished tasks of its key (cancel_in_progress) or is
-- refused (cancel_newest: nothing is written). A waiting task's ready steps have ready_at
-- 'infinity' (ready once admitted): never claimed, and CHECK steps_ready_at still holds.
CREATE OR REPLACE FUNCTION create_task(
    p_template_key text, p_context jsonb, p_identity_key text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}', p_now timestamptz DEFAULT now(),
    p_priority int DEFAULT NULL, p_run_at timestamptz DEFAULT NULL
) RETURNS TABLE (task_id bigint, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_tpl record;
    v_task bigint;
    v_roots int;
    v_priority int;
    v_key text;
    v_limit int;
    v_strategy text;
    v_holding int;
    v_waiting int;
    v_old bigint;
    v_admitted boolean := true;
BEGIN
    SELECT t.id, t.namespace_id, t.step_count, t.priority, t.concurrency INTO v_tpl
    FROM templates t WHERE t.template_key = p_template_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown template %', p_template_key USING ERRCODE = 'no_data_found';
    END IF;
    IF p_context IS NOT NULL AND jsonb_typeof(p_context) <> 'object' THEN
        RAISE EXCEPTION 'task context must be a JSON object, got %', jsonb_typeof(p_context)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_priority IS NOT NULL AND p_priority NOT BETWEEN 1 AND 5 THEN
        RAISE EXCEPTION 'priority must be from 1 (lowest) to 5 (highest), got %', p_priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_priority := coalesce(p_priority, v_tpl.priority, 3);
    IF v_tpl.concurrency IS NOT NULL THEN
        v_key := tasker_concurrency_key(v_tpl.concurrency ->> 'key', coalesce(p_context, '{}'));
        v_limit := (v_tpl.concurrency ->> 'limit')::int;
        v_strategy := coalesce(v_tpl.concurrency ->> 'strategy', 'queue');
    END IF;

    INSERT INTO tasks (namespace_id, template_id, state, context, identity_key, metadata,
                       step_count, unfinished_steps, created_at, updated_at, priority, run_at,
                       concurrency_key, concurrency_limit)
    VALUES (v_tpl.namespace_id, v_tpl.id, 'pending', coalesce(p_context, '{}'), p_identity_key,
            coalesce(p_metadata, '{}'), v_tpl.step_count, v_tpl.step_count, p_now, p_now,
            v_priority, p_run_at, v_key, v_limit)
    ON CONFLICT (namespace_id, identity_key) WHERE identity_key IS NOT NULL DO NOTHING
    RETURNING id INTO v_task;

    IF v_task IS NULL THEN
        RETURN QUERY
        SELECT t.id, false FROM tasks t
        WHERE t.namespace_id = v_tpl.namespace_id AND t.identity_key = p_identity_key;
        RETURN;
    END IF;

    IF v_key IS NOT NULL THEN
        -- The key's row, locked: every admission of the key waits for it.
        INSERT INTO concurrency_keys AS k (key) VALUES (v_key)
        ON CONFLICT (key) DO UPDATE SET holding = k.holding
        RETURNING k.holding INTO v_holding;
        IF v_strategy <> 'queue' THEN
            LOOP
                SELECT count(*) INTO v_waiting FROM tasks t
                WHERE t.concurrency_key = v_key AND t.concurrency_state = 'waiting';
                EXIT WHEN v_holding + v_waiting < v_limit;
                IF v_strategy = 'cancel_newest' THEN
                    RAISE EXCEPTION 'concurrency key % is at its limit (%/%): template % refuses new tasks (strategy cancel_newest)',
                        v_key, v_holding + v_waiting, v_limit, p_template_key
                        USING ERRCODE = 'object_not_in_prerequisite_state';
                END IF;
                -- cancel_in_progress: the oldest unfinished task of the key makes room.
                SELECT t.id INTO v_old FROM tasks t
                WHERE t.concurrency_key = v_key AND t.concurrency_state IS NOT NULL
                  AND t.id <> v_task
                ORDER BY t.id LIMIT 1;
                EXIT WHEN v_old IS NULL;
                PERFORM cancel_task(v_old, p_now);
                SELECT k.holding INTO v_holding FROM concurrency_keys k WHERE k.key = v_key;
            END LOOP;
        END IF;
        v_admitted := v_holding < v_limit AND (p_run_at IS NULL OR p_run_at <= p_now)
            AND NOT EXISTS (SELECT 1 FROM tasks t
                            WHERE t.concurrency_key = v_key AND t.concurrency_state = 'waiting'
                              AND (t.run_at IS NULL OR t.run_at <= p_now));
        UPDATE tasks t
        SET concurrency_state = CASE WHEN v_admitted THEN 'holding' ELSE 'waiting' END
        WHERE t.id = v_task;
        IF v_admitted THEN
            UPDATE concurrency_keys k SET holding = k.holding + 1 WHERE k.key = v_key;
        END IF;
    END IF;

    -- Steps in level order, so a parent's id is always below its children's.
    WITH ins AS (
        INSERT INTO steps (task_id, position, name, state, unfinished_parents, ready_at,
                           max_attempts, retryable, backoff_base_ms, backoff_multiplier,
                           backoff_cap_ms, backoff_jitter, max_retry_after_ms, max_lease_losses,
                           created_at, updated_at, priority)
        SELECT v_task, ts.position, ts.name, 'pending', cardinality(ts.parent_positions),
               CASE WHEN cardinality(ts.parent_positions) > 0 THEN NULL
                    WHEN v_admitted THEN greatest(p_now, coalesce(p_run_at, p_now))
                    ELSE 'infinity' END,
               ts.max_attempts, ts.retryable, ts.backoff_base_ms, ts.backoff_multiplier,
               ts.backoff_cap_ms, ts.backoff_jitter, ts.max_retry_after_ms, ts.max_lease_losses,
               p_now, p_now, coalesce(ts.priority, v_priority)
        FROM template_steps ts
        WHERE ts.template_id = v_tpl.id
        ORDER BY ts.level, ts.position
        RETURNING id, position
    ), e AS (
        INSERT INTO edges (task_id, parent_id, child_id)
        SELECT v_task, p.id, c.id
        FROM template_steps ts
        CROSS JOIN LATERAL unnest(ts.parent_positions) AS pp(position)
        JOIN ins c ON c.position = ts.position
        JOIN ins p ON p.position = pp.position
        WHERE ts.template_id = v_tpl.id
    )
    SELECT count(*) FILTER (WHERE ts.parent_positions = '{}') INTO v_roots
    FROM template_steps ts WHERE ts.template_id = v_tpl.id;

    -- Also for a delayed start: idle workers look up when to look again (next_ready_at).
    PERFORM pg_notify('tasker_ready', v_roots::text);
    RETURN QUERY SELECT v_task, true;
END
$$;
