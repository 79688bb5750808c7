-- Why an item of a batch was refused, given the step's state now; tasker_store::rules::refusal is
-- the same rule for the embedded store (checked against this one on random inputs).
CREATE OR REPLACE FUNCTION tasker_refusal(p_state text, p_claim_count int, p_token bigint, p_duplicate boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_duplicate THEN 'duplicate_in_batch'
        WHEN p_state IS NULL THEN 'unknown_step'
        WHEN p_state = 'cancelled' THEN 'cancelled'
        WHEN p_claim_count IS DISTINCT FROM p_token THEN 'stale_token'
        WHEN p_state <> 'in_progress' THEN 'not_in_progress'
        ELSE 'refused'
    END
$$;
