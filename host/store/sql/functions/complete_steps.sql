-- Complete a batch of claimed steps: attempts rows, transitions, children released, tasks
-- finalized, one NOTIFY. complete_and_claim_steps without a claim, so the two cannot drift.
CREATE OR REPLACE FUNCTION complete_steps(
    p_step_ids bigint[],
    p_tokens bigint[],
    p_results jsonb[],
    p_fuel bigint[] DEFAULT NULL,
    p_peak_memory_bytes bigint[] DEFAULT NULL,
    p_wall_us bigint[] DEFAULT NULL,
    p_plugin_hashes text[] DEFAULT NULL,
    p_now timestamptz DEFAULT now(),
    p_logs jsonb[] DEFAULT NULL
) RETURNS TABLE (
    step_id bigint,
    task_id bigint,
    accepted boolean,
    refusal text,
    task_state text
)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT c.step_id, c.task_id, c.accepted, c.refusal, c.task_state
    FROM complete_and_claim_steps(p_step_ids, p_tokens, p_results, p_fuel, p_peak_memory_bytes,
                                  p_wall_us, p_plugin_hashes, NULL, 0, NULL, p_now,
                                  p_logs) c;
END
$$;
