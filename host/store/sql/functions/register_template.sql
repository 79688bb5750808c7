-- Register a validated template. p_steps is a JSON array of objects with the keys
-- name, handler, depends_on (names), config, limits, grants, max_attempts, retryable,
-- backoff_base_ms, backoff_multiplier, backoff_cap_ms, backoff_jitter, max_retry_after_ms,
-- max_lease_losses, priority (NULL: the task's). The template's own default priority is
-- p_definition's `priority`, its concurrency spec p_definition's `concurrency` ({key, limit,
-- strategy}, tasker_core::concurrency). Re-registering the same key with the same definition returns the
-- existing id; with a different definition it is refused (versions are immutable).
CREATE OR REPLACE FUNCTION register_template(
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
                           definition, step_count, priority, concurrency)
    VALUES (v_ns, p_name, p_version, v_key, p_description, p_context_schema, p_definition, v_n,
            (p_definition ->> 'priority')::int, p_definition -> 'concurrency')
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
                                    backoff_jitter, max_retry_after_ms, max_lease_losses, pin,
                                    priority)
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
               coalesce(s.spec ->> 'pin', 'sticky'),
               (s.spec ->> 'priority')::int
        FROM tasker_tpl_steps s;
    EXCEPTION WHEN check_violation OR invalid_text_representation OR numeric_value_out_of_range THEN
        RAISE EXCEPTION 'template %: bad retry settings: %', v_key, SQLERRM
            USING ERRCODE = 'invalid_parameter_value';
    END;

    RETURN QUERY SELECT v_id, v_key, true;
END
$$;
