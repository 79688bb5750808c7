-- p_ms milliseconds as an interval, clamped to [0, 30 days] (tasker_core::backoff::MAX_DELAY_MS)
-- so `now + tasker_ms(...)` cannot fail with "interval out of range" on an old or hand-made
-- setting and leave a failure unrecorded until its lease expires. sqlite/hot.rs clamps alike.
CREATE OR REPLACE FUNCTION tasker_ms(p_ms bigint) RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT least(greatest(p_ms, 0), 2592000000) * interval '1 millisecond'
$$;
