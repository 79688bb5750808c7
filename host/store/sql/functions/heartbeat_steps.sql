-- Extend the leases of steps this worker holds. Fenced: the token must be current and the
-- step still in_progress under this worker.
CREATE OR REPLACE FUNCTION heartbeat_steps(
    p_worker text, p_step_ids bigint[], p_tokens bigint[], p_lease interval,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (step_id bigint, accepted boolean, lease_expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM tasker_check_lengths('heartbeat_steps', coalesce(cardinality(p_step_ids), 0),
        cardinality(p_tokens));
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'heartbeat_steps: lease must be positive, got %', p_lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM tasker_lock_steps(p_step_ids, false);
    RETURN QUERY
    WITH u AS (
        UPDATE steps s
        SET lease_expires_at = p_now + p_lease, updated_at = p_now
        FROM unnest(p_step_ids, p_tokens) AS i(sid, tok)
        WHERE s.id = i.sid AND s.state = 'in_progress' AND s.claim_count = i.tok
          AND s.worker = p_worker
        RETURNING s.id, s.lease_expires_at
    )
    SELECT i.sid, u.id IS NOT NULL, u.lease_expires_at
    FROM unnest(p_step_ids) WITH ORDINALITY AS i(sid, ord)
    LEFT JOIN u ON u.id = i.sid
    ORDER BY i.ord;
END
$$;
