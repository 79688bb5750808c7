-- What an accepted failure does to its step: 'retry' while both the failure and the step allow
-- it and attempts are left, else 'permanent' or 'exhausted'. tasker_store::rules::retry_decision
-- is the same rule for the embedded store; a property test checks that they agree.
CREATE OR REPLACE FUNCTION tasker_retry_decision(p_failure_retryable boolean,
                                                 p_step_retryable boolean,
                                                 p_attempts int, p_max_attempts int)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN NOT (coalesce(p_failure_retryable, false) AND p_step_retryable)
                THEN 'permanent'
                WHEN p_attempts::bigint + 1 >= p_max_attempts THEN 'exhausted'
                ELSE 'retry' END
$$;
