-- Operations: register a template, create / cancel / retry a task, resolve a step.
--
-- Errors use SQLSTATEs the store maps to typed errors: 22023 invalid input (names the field),
-- P0002 not found, 55000 wrong state for the operation, 23505 conflicting template version.

-- Register a validated template. p_steps is a JSON array of objects with the keys
-- name, handler, depends_on (names), config, limits, grants, max_attempts, retryable,
-- backoff_base_ms, backoff_multiplier, backoff_cap_ms, backoff_jitter, max_retry_after_ms,
-- max_lease_losses. Re-registering the same key with the same definition returns the
-- existing id; with a different definition it is refused (versions are immutable).
CREATE FUNCTION register_template(
    p_namespace text, p_name text, p_version text, p_description text,
    p_context_schema jsonb, p_definition jsonb, p_steps jsonb
) RETURNS TABLE (template_id bigint, template_key text, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_key text := p_namespace || '/' || p_name || '@' || p_version;
    v_ns bigint;
    v_existing record;
    v_id bigint;
    v_n int;
    v_bad text;
    v_left int;
    v_round int := 0;
BEGIN
    IF coalesce(p_namespace, '') = '' OR coalesce(p_name, '') = '' OR coalesce(p_version, '') = '' THEN
        RAISE EXCEPTION 'register_template: namespace, name and version must be non-empty (got %)', v_key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_steps IS NULL OR jsonb_typeof(p_steps) <> 'array' OR jsonb_array_length(p_steps) = 0 THEN
        RAISE EXCEPTION 'template %: steps must be a non-empty array', v_key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT t.id, t.definition INTO v_existing FROM templates t WHERE t.template_key = v_key;
    IF FOUND THEN
        IF v_existing.definition = p_definition THEN
            RETURN QUERY SELECT v_existing.id, v_key, false;
            RETURN;
        END IF;
        RAISE EXCEPTION 'template % is already registered with a different definition; publish a new version', v_key
            USING ERRCODE = 'unique_violation';
    END IF;

    CREATE TEMP TABLE IF NOT EXISTS tasker_tpl_steps (
        position int, name text, spec jsonb, deps text[], level int
    ) ON COMMIT DROP;
    TRUNCATE tasker_tpl_steps;
    INSERT INTO tasker_tpl_steps (position, name, spec, deps)
    SELECT (e.ord - 1)::int, e.spec ->> 'name', e.spec,
           coalesce(ARRAY(SELECT jsonb_array_elements_text(e.spec -> 'depends_on')), '{}')
    FROM jsonb_array_elements(p_steps) WITH ORDINALITY AS e(spec, ord);

    SELECT format('step %s has no name', position) INTO v_bad
    FROM tasker_tpl_steps WHERE coalesce(name, '') = '' LIMIT 1;
    IF v_bad IS NULL THEN
        SELECT format('duplicate step name %L', name) INTO v_bad
        FROM tasker_tpl_steps GROUP BY name HAVING count(*) > 1 LIMIT 1;
    END IF;
    IF v_bad IS NULL THEN
        SELECT format('step %L depends on unknown step %L', s.name, d.dep) INTO v_bad
        FROM tasker_tpl_steps s, unnest(s.deps) AS d(dep)
        WHERE NOT EXISTS (SELECT 1 FROM tasker_tpl_steps o WHERE o.name = d.dep) LIMIT 1;
    END IF;
    IF v_bad IS NULL THEN
        SELECT format('step %L: handler must be non-empty', name) INTO v_bad
        FROM tasker_tpl_steps WHERE coalesce(spec ->> 'handler', '') = '' LIMIT 1;
    END IF;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'template %: %', v_key, v_bad USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Levels (longest path) by rounds; steps left without a level are on a cycle.
    UPDATE tasker_tpl_steps SET level = 0 WHERE cardinality(deps) = 0;
    LOOP
        v_round := v_round + 1;
        UPDATE tasker_tpl_steps s SET level = v_round
        WHERE s.level IS NULL
          AND NOT EXISTS (SELECT 1 FROM unnest(s.deps) d(dep) JOIN tasker_tpl_steps p ON p.name = d.dep
                          WHERE p.level IS NULL OR p.level >= v_round);
        EXIT WHEN NOT FOUND;
    END LOOP;
    SELECT string_agg(name, ', ' ORDER BY position), count(*) INTO v_bad, v_left
    FROM tasker_tpl_steps WHERE level IS NULL;
    IF v_left > 0 THEN
        RAISE EXCEPTION 'template %: dependency cycle among steps %', v_key, v_bad
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO namespaces (name) VALUES (p_namespace) ON CONFLICT (name) DO NOTHING;
    SELECT n.id INTO v_ns FROM namespaces n WHERE n.name = p_namespace;
    SELECT count(*) INTO v_n FROM tasker_tpl_steps;

    INSERT INTO templates (namespace_id, name, version, template_key, description, context_schema,
                           definition, step_count)
    VALUES (v_ns, p_name, p_version, v_key, p_description, p_context_schema, p_definition, v_n)
    ON CONFLICT (template_key) DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        -- Registered concurrently by another session: same answer as above.
        SELECT t.id, t.definition INTO v_existing FROM templates t WHERE t.template_key = v_key;
        IF v_existing.definition = p_definition THEN
            RETURN QUERY SELECT v_existing.id, v_key, false;
            RETURN;
        END IF;
        RAISE EXCEPTION 'template % is already registered with a different definition; publish a new version', v_key
            USING ERRCODE = 'unique_violation';
    END IF;

    BEGIN
        INSERT INTO template_steps (template_id, position, name, handler, config, limits, grants,
                                    parent_positions, level, max_attempts, retryable,
                                    backoff_base_ms, backoff_multiplier, backoff_cap_ms,
                                    backoff_jitter, max_retry_after_ms, max_lease_losses, pin)
        SELECT v_id, s.position, s.name, s.spec ->> 'handler',
               coalesce(s.spec -> 'config', '{}'), coalesce(s.spec -> 'limits', '{}'),
               coalesce(s.spec -> 'grants', '{}'),
               ARRAY(SELECT p.position FROM unnest(s.deps) d(dep) JOIN tasker_tpl_steps p
                     ON p.name = d.dep ORDER BY p.position),
               s.level,
               coalesce((s.spec ->> 'max_attempts')::int, 3),
               coalesce((s.spec ->> 'retryable')::boolean, true),
               coalesce((s.spec ->> 'backoff_base_ms')::bigint, 1000),
               coalesce((s.spec ->> 'backoff_multiplier')::float8, 2.0),
               coalesce((s.spec ->> 'backoff_cap_ms')::bigint, 300000),
               coalesce((s.spec ->> 'backoff_jitter')::float8, 0.1),
               coalesce((s.spec ->> 'max_retry_after_ms')::bigint, 3600000),
               coalesce((s.spec ->> 'max_lease_losses')::int, 5),
               coalesce(s.spec ->> 'pin', 'sticky')
        FROM tasker_tpl_steps s;
    EXCEPTION WHEN check_violation OR invalid_text_representation OR numeric_value_out_of_range THEN
        RAISE EXCEPTION 'template %: bad retry settings: %', v_key, SQLERRM
            USING ERRCODE = 'invalid_parameter_value';
    END;

    RETURN QUERY SELECT v_id, v_key, true;
END
$$;

-- Create a task from a registered template. With an identity key, a second create in the
-- same namespace returns the first task and created = false.
CREATE FUNCTION create_task(
    p_template_key text, p_context jsonb, p_identity_key text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}', p_now timestamptz DEFAULT now()
) RETURNS TABLE (task_id bigint, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_tpl record;
    v_task bigint;
    v_roots int;
BEGIN
    SELECT t.id, t.namespace_id, t.step_count INTO v_tpl
    FROM templates t WHERE t.template_key = p_template_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown template %', p_template_key USING ERRCODE = 'no_data_found';
    END IF;
    IF p_context IS NOT NULL AND jsonb_typeof(p_context) <> 'object' THEN
        RAISE EXCEPTION 'task context must be a JSON object, got %', jsonb_typeof(p_context)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO tasks (namespace_id, template_id, state, context, identity_key, metadata,
                       step_count, unfinished_steps, created_at, updated_at)
    VALUES (v_tpl.namespace_id, v_tpl.id, 'pending', coalesce(p_context, '{}'), p_identity_key,
            coalesce(p_metadata, '{}'), v_tpl.step_count, v_tpl.step_count, p_now, p_now)
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
                           created_at, updated_at)
        SELECT v_task, ts.position, ts.name, 'pending', cardinality(ts.parent_positions),
               CASE WHEN cardinality(ts.parent_positions) = 0 THEN p_now END,
               ts.max_attempts, ts.retryable, ts.backoff_base_ms, ts.backoff_multiplier,
               ts.backoff_cap_ms, ts.backoff_jitter, ts.max_retry_after_ms, ts.max_lease_losses,
               p_now, p_now
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

    PERFORM pg_notify('tasker_ready', v_roots::text);
    RETURN QUERY SELECT v_task, true;
END
$$;

-- Cancel a task: every step not yet finished -> cancelled (an in-flight claim's attempt is
-- recorded as cancelled, and its completion will be refused). Cancelling a cancelled task
-- changes nothing; a complete task cannot be cancelled.
CREATE FUNCTION cancel_task(p_task_id bigint, p_now timestamptz DEFAULT now())
RETURNS TABLE (task_id bigint, cancelled boolean, steps_cancelled int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_state text;
    v_steps bigint[];
    v_n int := 0;
BEGIN
    SELECT t.state INTO v_state FROM tasks t WHERE t.id = p_task_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown task %', p_task_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_state = 'cancelled' THEN
        RETURN QUERY SELECT p_task_id, false, 0;
        RETURN;
    END IF;
    IF v_state = 'complete' THEN
        RAISE EXCEPTION 'task % is complete and cannot be cancelled', p_task_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM set_config('tasker.reason', 'cancelled', true);

    SELECT array_agg(s.id ORDER BY s.id) INTO v_steps FROM steps s WHERE s.task_id = p_task_id;
    PERFORM tasker_lock_steps(v_steps, false);
    WITH u AS (
        UPDATE steps s
        SET state = 'cancelled', ready_at = NULL, lease_expires_at = NULL, finished_at = p_now,
            updated_at = p_now
        FROM steps o
        WHERE s.id = o.id AND s.task_id = p_task_id
          AND s.state IN ('pending', 'in_progress', 'waiting_for_retry', 'error')
        RETURNING s.id, s.task_id, s.claim_count, s.worker, s.last_attempted_at,
                  o.state AS old_state
    ), a AS (
        INSERT INTO attempts (step_id, attempt_no, task_id, worker, started_at, finished_at,
                              outcome, error_kind, message)
        SELECT u.id, u.claim_count, u.task_id, u.worker, u.last_attempted_at, p_now,
               'cancelled', 'cancelled', 'task cancelled while the step ran'
        FROM u WHERE u.old_state = 'in_progress'
    )
    SELECT count(*) INTO v_n FROM u;

    PERFORM tasker_lock_tasks(ARRAY[p_task_id]);
    UPDATE tasks t SET state = 'cancelled', finished_at = p_now, updated_at = p_now
    WHERE t.id = p_task_id AND t.state IN ('pending', 'in_progress', 'error');
    IF NOT FOUND THEN
        -- It finished between our read and our lock.
        SELECT t.state INTO v_state FROM tasks t WHERE t.id = p_task_id;
        RAISE EXCEPTION 'task % is % and cannot be cancelled', p_task_id, v_state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN QUERY SELECT p_task_id, true, v_n;
END
$$;

-- Retry a task in error: its error steps go back to pending with a fresh attempt budget
-- (and lease-loss budget); the task goes back to pending.
CREATE FUNCTION retry_task(p_task_id bigint, p_now timestamptz DEFAULT now())
RETURNS TABLE (task_id bigint, steps_reset int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_state text;
    v_steps bigint[];
    v_n int := 0;
    v_ready int := 0;
BEGIN
    SELECT t.state INTO v_state FROM tasks t WHERE t.id = p_task_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown task %', p_task_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_state <> 'error' THEN
        RAISE EXCEPTION 'task % is %; only a task in error can be retried', p_task_id, v_state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM set_config('tasker.reason', 'task_retry', true);

    SELECT array_agg(s.id ORDER BY s.id) INTO v_steps
    FROM steps s WHERE s.task_id = p_task_id AND s.state = 'error';
    PERFORM tasker_lock_steps(v_steps, false);
    WITH u AS (
        UPDATE steps s
        SET state = 'pending', attempts = 0, lease_losses = 0,
            ready_at = CASE WHEN s.unfinished_parents = 0 THEN p_now END,
            backoff_request_ms = NULL, finished_at = NULL, updated_at = p_now
        WHERE s.id = ANY (v_steps) AND s.state = 'error'
        RETURNING s.ready_at
    )
    SELECT count(*), count(*) FILTER (WHERE u.ready_at IS NOT NULL) INTO v_n, v_ready FROM u;

    PERFORM tasker_lock_tasks(ARRAY[p_task_id]);
    UPDATE tasks t SET state = 'pending', error_steps = 0, finished_at = NULL, updated_at = p_now
    WHERE t.id = p_task_id AND t.state = 'error';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % left the error state during the retry', p_task_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_ready > 0 THEN
        PERFORM pg_notify('tasker_ready', v_ready::text);
    END IF;
    RETURN QUERY SELECT p_task_id, v_n;
END
$$;

-- Resolve a step by hand (pending, waiting_for_retry or error -> resolved_manually). It counts
-- as complete for its children, which are released. The task may complete, or, if it was in
-- error and can move again, go back to pending.
CREATE FUNCTION resolve_step(
    p_step_id bigint, p_result jsonb DEFAULT NULL, p_now timestamptz DEFAULT now()
) RETURNS TABLE (step_id bigint, task_id bigint, ready_children int, task_state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_step record;
    v_ready int;
    v_task_state text;
BEGIN
    SELECT s.id, s.task_id, s.state INTO v_step FROM steps s WHERE s.id = p_step_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown step %', p_step_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM set_config('tasker.reason', 'resolved_manually', true);
    PERFORM tasker_lock_steps(ARRAY[p_step_id], true);
    SELECT s.state INTO v_step.state FROM steps s WHERE s.id = p_step_id;
    IF v_step.state NOT IN ('pending', 'waiting_for_retry', 'error') THEN
        RAISE EXCEPTION 'step % is %; only a pending, waiting_for_retry or error step can be resolved',
            p_step_id, v_step.state USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    UPDATE steps s
    SET state = 'resolved_manually', ready_at = NULL, result = p_result, finished_at = p_now,
        updated_at = p_now
    WHERE s.id = p_step_id;
    v_ready := tasker_release_children(ARRAY[p_step_id], p_now);

    PERFORM tasker_lock_tasks(ARRAY[v_step.task_id]);
    UPDATE tasks t
    SET unfinished_steps = t.unfinished_steps - 1,
        error_steps = t.error_steps - CASE WHEN v_step.state = 'error' THEN 1 ELSE 0 END,
        updated_at = p_now
    WHERE t.id = v_step.task_id
    RETURNING t.state INTO v_task_state;

    IF v_task_state = 'error' THEN
        -- Blocked before; unblocked now if something can move or nothing is left.
        UPDATE tasks t SET state = 'pending', finished_at = NULL, updated_at = p_now
        WHERE t.id = v_step.task_id
          AND (t.unfinished_steps = 0 OR t.error_steps = 0
               OR EXISTS (SELECT 1 FROM steps s WHERE s.task_id = t.id
                          AND (s.state IN ('in_progress', 'waiting_for_retry')
                               OR s.ready_at IS NOT NULL)));
    END IF;
    PERFORM tasker_finalize_tasks(ARRAY[v_step.task_id], p_now);
    SELECT t.state INTO v_task_state FROM tasks t WHERE t.id = v_step.task_id;
    IF v_ready > 0 THEN
        PERFORM pg_notify('tasker_ready', v_ready::text);
    END IF;
    RETURN QUERY SELECT p_step_id, v_step.task_id, v_ready, v_task_state;
END
$$;
