-- tasker_core::backoff::jitter_unit: a number in [0, 1) from a seed and a failure number.
CREATE OR REPLACE FUNCTION tasker_jitter_unit(p_seed bigint, p_failure bigint) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (((((p_seed % 2147483648) + 2147483648) % 2147483648) * 1103515245
             + (((p_failure % 2147483648) + 2147483648) % 2147483648) * 12345
             + 1013904223) % 2147483648)::float8 / 2147483648.0::float8
$$;
