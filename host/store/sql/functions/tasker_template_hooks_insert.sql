-- A registered template's `hooks:` become template_hooks rows (delivery defaults filled in),
-- so register_template needs no change.
CREATE OR REPLACE FUNCTION tasker_template_hooks_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO template_hooks (template_id, position, component, patterns, limits, grants,
                                max_attempts, backoff_base_ms, backoff_multiplier,
                                backoff_cap_ms, backoff_jitter)
    SELECT n.id, h.ord - 1, h.v->>'component',
           ARRAY(SELECT jsonb_array_elements_text(h.v->'events')),
           coalesce(h.v->'limits', '{}'), coalesce(h.v->'grants', '{}'),
           coalesce((h.v#>>'{delivery,max_attempts}')::int, 5),
           coalesce((h.v#>>'{delivery,backoff,base_ms}')::bigint, 1000),
           coalesce((h.v#>>'{delivery,backoff,multiplier}')::float8, 2),
           coalesce((h.v#>>'{delivery,backoff,cap_ms}')::bigint, 300000),
           coalesce((h.v#>>'{delivery,backoff,jitter}')::float8, 0.1)
    FROM new_rows n
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(n.definition->'hooks') = 'array' THEN n.definition->'hooks'
             ELSE '[]'::jsonb END) WITH ORDINALITY AS h(v, ord);
    RETURN NULL;
END
$$;
