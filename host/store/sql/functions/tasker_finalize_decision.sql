-- What a task becomes after its steps changed (NULL: it stays as it is): 'complete' when no
-- unfinished step is left, 'error' when a step is in error and no other step can move (none
-- in progress, waiting for retry or claimable). Only pending and in_progress tasks finalize.
-- tasker_store::rules::finalize is the same rule for the embedded store; a property test
-- checks that they agree. A plain SQL CASE, so PostgreSQL inlines it and evaluates
-- p_steps_can_move (an EXISTS) only when the answer depends on it.
CREATE OR REPLACE FUNCTION tasker_finalize_decision(p_state text, p_unfinished_steps int,
                                                    p_error_steps int,
                                                    p_steps_can_move boolean)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_state NOT IN ('pending', 'in_progress') THEN NULL
                WHEN p_unfinished_steps = 0 THEN 'complete'
                WHEN p_error_steps > 0 AND NOT p_steps_can_move THEN 'error' END
$$;
