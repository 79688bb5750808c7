-- Handlers' custom events (`custom.<name>`), recorded by the worker in the same transaction
-- as the attempt's complete_steps / fail_steps call, after it. Only attempts that call
-- accepted (an attempts row for (step, token) that ended at p_now) are kept, so a refused
-- (stale) attempt's events are dropped with it. Every kept event goes into the event log
-- (task_events_custom, in (task, input) order, for every task: docs/store.md, "The event
-- log"), and then into the outbox for the hooks that subscribe to it.
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
    -- The log's ids follow (task, input order) within the transaction; its order key is
    -- (xid, 1, id), so ids need no lock. The outbox rows are drawn below, under the tasks'
    -- row locks, from the same rows.
    WITH kept AS (
        INSERT INTO task_events_custom (task_id, step_id, step_name, attempt, name, payload,
                                        created_at)
        SELECT s.task_id, s.id, s.name, s.attempts, 'custom.' || x.name,
               coalesce(x.payload, '{}'), p_now
        FROM unnest(p_step_ids, p_tokens, p_names, p_payloads) WITH ORDINALITY
             AS x(sid, tok, name, payload, ord)
        JOIN steps s ON s.id = x.sid
        WHERE EXISTS (SELECT 1 FROM attempts a
                      WHERE a.step_id = x.sid AND a.attempt_no = x.tok AND a.finished_at = p_now
                        AND a.outcome IN ('completed', 'failed'))
        ORDER BY s.task_id, x.ord
        RETURNING id, task_id, step_id, step_name, attempt, name, payload, created_at
    )
    SELECT jsonb_agg(jsonb_build_object(
               'ord', k.rn, 'task_id', k.task_id, 'step_id', k.step_id,
               'step_name', k.step_name, 'name', k.name, 'attempt', k.attempt,
               'payload', k.payload, 'at', k.created_at) ORDER BY k.rn)
    INTO v_events
    FROM (SELECT kept.*, row_number() OVER (ORDER BY kept.task_id, kept.id) AS rn
          FROM kept) k;
    IF v_events IS NULL OR NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN 0;
    END IF;
    v_tasks := tasker_hook_lock_tasks(ARRAY(
        SELECT DISTINCT (e ->> 'task_id')::bigint FROM jsonb_array_elements(v_events) e));
    IF v_tasks IS NULL THEN
        RETURN 0;
    END IF;
    RETURN tasker_hook_enqueue(v_events);
END
$$;
