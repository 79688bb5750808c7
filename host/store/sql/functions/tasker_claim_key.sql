-- The claim order's key (tasker_core::priority::claim_key): a step's ready time less the
-- head start of its priority, 30 s per level above 1. Claims take the smallest key first,
-- then the lowest id. SQL, so it is inlined where it is used.
CREATE OR REPLACE FUNCTION tasker_claim_key(p_ready_at timestamptz, p_priority int)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT p_ready_at - interval '30 seconds' * (p_priority - 1)
$$;
