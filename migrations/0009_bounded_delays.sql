-- A retry delay is at most 30 days (tasker_core::backoff::MAX_DELAY_MS). Templates above it
-- are refused at validation; a larger stored setting (an older row, a template registered
-- from code) is clamped here, so `now + tasker_ms(...)` can no longer fail with "interval
-- out of range" and leave a failure unrecorded until its lease expires. The embedded store
-- clamps the same way (sqlite/hot.rs `decide`).

CREATE OR REPLACE FUNCTION tasker_ms(p_ms bigint) RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT least(greatest(p_ms, 0), 2592000000) * interval '1 millisecond'
$$;
