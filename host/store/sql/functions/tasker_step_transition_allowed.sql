-- Whether a step may go from p_from to p_to (step_state_transitions, tasker_core::state).
CREATE OR REPLACE FUNCTION tasker_step_transition_allowed(p_from text, p_to text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM step_state_transitions WHERE from_state = p_from AND to_state = p_to)
$$;
