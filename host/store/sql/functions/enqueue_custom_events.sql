-- Handlers' custom events (`custom.<name>`), recorded by the worker in the same transaction
-- as the attempt's complete_steps / fail_steps call, after it. Only attempts that call
-- accepted (an attempts row for (step, token) that ended at p_now) are kept, so a refused
-- (stale) attempt's events are dropped with it.
CREATE OR REPLACE FUNCTION enqueue_custom_events(
    p_step_ids bigint[],
    p_tokens bigint[],
    p_names text[],
    p_payloads jsonb[],
    p_now timestamptz DEFAULT now()
) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_tasks bigint[];
    v_events jsonb;
BEGIN
    PERFORM tasker_check_lengths('enqueue_custom_events', coalesce(cardinality(p_step_ids), 0),
        cardinality(p_tokens), cardinality(p_names), cardinality(p_payloads));
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN 0;
    END IF;
    v_tasks := tasker_hook_lock_tasks(ARRAY(
        SELECT DISTINCT s.task_id FROM steps s WHERE s.id = ANY (p_step_ids)));
    IF v_tasks IS NULL THEN
        RETURN 0;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'ord', x.ord, 'task_id', s.task_id, 'step_id', s.id, 'step_name', s.name,
               'name', 'custom.' || x.name, 'attempt', s.attempts, 'payload', x.payload,
               'at', p_now) ORDER BY s.task_id, x.ord)
    INTO v_events
    FROM unnest(p_step_ids, p_tokens, p_names, p_payloads) WITH ORDINALITY
         AS x(sid, tok, name, payload, ord)
    JOIN steps s ON s.id = x.sid
    WHERE s.task_id = ANY (v_tasks)
      AND EXISTS (SELECT 1 FROM attempts a
                  WHERE a.step_id = x.sid AND a.attempt_no = x.tok AND a.finished_at = p_now
                    AND a.outcome IN ('completed', 'failed'));
    IF v_events IS NULL THEN
        RETURN 0;
    END IF;
    RETURN tasker_hook_enqueue(v_events);
END
$$;
