-- A task's concurrency key (tasker_core::concurrency::resolve_key, which a test checks this
-- against): a constant as it is; for a JSON pointer (RFC 6901) into the context,
-- `pointer=value`, the value a string as it is, an integer or a boolean as JSON. A missing,
-- null or structured value is refused, naming the pointer.
CREATE OR REPLACE FUNCTION tasker_concurrency_key(p_spec text, p_context jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb;
    v_text text;
BEGIN
    IF left(p_spec, 1) <> '/' THEN
        RETURN p_spec;
    END IF;
    v := p_context #> ARRAY(
        SELECT replace(replace(t, '~1', '/'), '~0', '~')
        -- regexp_split_to_array, not string_to_array: '' is one empty segment, not none.
        FROM unnest(regexp_split_to_array(substr(p_spec, 2), '/')) WITH ORDINALITY AS x(t, n)
        ORDER BY n);
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RAISE EXCEPTION 'concurrency key %: the context has no value there', p_spec
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_text := CASE jsonb_typeof(v)
        WHEN 'string' THEN v #>> '{}'
        WHEN 'boolean' THEN v::text
        -- An integer in i64 or u64 range, as serde_json reads one; beyond it is a float.
        WHEN 'number' THEN CASE WHEN v::text ~ '^-?[0-9]+$'
                                 AND v::numeric BETWEEN -9223372036854775808 AND 18446744073709551615
                                THEN v::text END
    END;
    IF v_text IS NULL THEN
        RAISE EXCEPTION 'concurrency key %: the context''s value there is %, expected a string, an integer or a boolean',
            p_spec, CASE jsonb_typeof(v) WHEN 'number' THEN 'a fractional number'
                                         WHEN 'array' THEN 'an array' ELSE 'an object' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_spec || '=' || v_text;
END
$$;
