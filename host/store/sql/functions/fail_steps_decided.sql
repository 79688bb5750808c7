-- fail_steps, then who decided each accepted failure and what it answered, and what the
-- attempt said (p_logs, attempts.logs; NULL for nothing), on its attempt row.
-- A policy's delay arrives as p_retry_after_ms (so max_retry_after_ms and max_attempts
-- still bound it: a policy can never push a step past them).
CREATE OR REPLACE FUNCTION fail_steps_decided(
    p_step_ids bigint[],
    p_tokens bigint[],
    p_error_kinds text[],
    p_messages text[],
    p_retryable boolean[],
    p_retry_after_ms bigint[],
    p_fuel bigint[],
    p_peak_memory_bytes bigint[],
    p_wall_us bigint[],
    p_plugin_hashes text[],
    p_decided_by text[],
    p_decision_details text[],
    p_policy_warnings text[],
    p_now timestamptz DEFAULT now(),
    p_logs jsonb[] DEFAULT NULL
) RETURNS TABLE (
    step_id bigint,
    task_id bigint,
    accepted boolean,
    refusal text,
    decision text,
    next_ready_at timestamptz,
    task_state text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM tasker_check_lengths('fail_steps_decided', coalesce(cardinality(p_step_ids), 0),
        cardinality(p_decided_by), cardinality(p_decision_details), cardinality(p_policy_warnings),
        cardinality(p_logs));
    RETURN QUERY
    SELECT * FROM fail_steps(p_step_ids, p_tokens, p_error_kinds, p_messages, p_retryable,
                             p_retry_after_ms, p_fuel, p_peak_memory_bytes, p_wall_us,
                             p_plugin_hashes, p_now);
    UPDATE attempts a
    SET decided_by = x.by, decision_detail = x.detail, policy_warning = x.warn, logs = x.logs
    FROM unnest(p_step_ids, p_tokens, p_decided_by, p_decision_details, p_policy_warnings, p_logs)
         AS x(sid, tok, by, detail, warn, logs)
    WHERE a.step_id = x.sid AND a.attempt_no = x.tok AND a.outcome = 'failed'
      AND a.finished_at = p_now AND a.decided_by IS NULL;
END
$$;
