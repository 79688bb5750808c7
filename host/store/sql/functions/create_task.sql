-- Create a task from a registered template. With an identity key, a second create in the
-- same namespace returns the first task and created = false.
-- p_priority: the task's (else the template's, else 3); a step's own priority in the
-- template wins over it. p_run_at: its first steps are ready at that instant, not before.
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
BEGIN
    SELECT t.id, t.namespace_id, t.step_count, t.priority INTO v_tpl
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

    INSERT INTO tasks (namespace_id, template_id, state, context, identity_key, metadata,
                       step_count, unfinished_steps, created_at, updated_at, priority, run_at)
    VALUES (v_tpl.namespace_id, v_tpl.id, 'pending', coalesce(p_context, '{}'), p_identity_key,
            coalesce(p_metadata, '{}'), v_tpl.step_count, v_tpl.step_count, p_now, p_now,
            v_priority, p_run_at)
    ON CONFLICT (namespace_id, identity_key) WHERE identity_key IS NOT NULL DO NOTHING
    RETURNING id INTO v_task;

    IF v_task IS NULL THEN
        RETURN QUERY
        SELECT t.id, false FROM tasks t
        WHERE t.namespace_id = v_tpl.namespace_id AND t.identity_key = p_identity_key;
        RETURN;
    END IF;

    -- Steps in level order, so a parent's id is always below its children's.
    WITH ins AS (
        INSERT INTO steps (task_id, position, name, state, unfinished_parents, ready_at,
                           max_attempts, retryable, backoff_base_ms, backoff_multiplier,
                           backoff_cap_ms, backoff_jitter, max_retry_after_ms, max_lease_losses,
                           created_at, updated_at, priority)
        SELECT v_task, ts.position, ts.name, 'pending', cardinality(ts.parent_positions),
               CASE WHEN cardinality(ts.parent_positions) = 0
                    THEN greatest(p_now, coalesce(p_run_at, p_now)) END,
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
