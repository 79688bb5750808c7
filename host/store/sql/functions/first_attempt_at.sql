-- When each step's first attempt started (for a retry policy's "time since first attempt").
CREATE OR REPLACE FUNCTION first_attempt_at(p_step_ids bigint[])
RETURNS TABLE (step_id bigint, first_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.id, coalesce((SELECT min(a.started_at) FROM attempts a WHERE a.step_id = s.id),
                          s.last_attempted_at)
    FROM steps s WHERE s.id = ANY (p_step_ids)
$$;
