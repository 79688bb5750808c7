-- step.completed / step.failed (+ step.retry_scheduled | step.exhausted) / step.lease_lost,
-- from the attempts row every ended claim writes.
CREATE OR REPLACE FUNCTION tasker_hooks_from_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_tasks bigint[];
    v_events jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    v_tasks := tasker_hook_lock_tasks(ARRAY(SELECT DISTINCT n.task_id FROM new_rows n
                                            WHERE n.outcome IN ('completed', 'failed', 'lease_lost')));
    IF v_tasks IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(ev ORDER BY (ev->>'task_id')::bigint, (ev->>'ord')::int) INTO v_events
    FROM (
        SELECT jsonb_build_object(
                   'ord', row_number() OVER (ORDER BY n.step_id, n.attempt_no) * 2 + k.sub,
                   'task_id', n.task_id, 'step_id', n.step_id, 'step_name', s.name,
                   'name', k.name,
                   'attempt', CASE WHEN n.outcome = 'lease_lost' THEN s.attempts + 1
                                   ELSE s.attempts END,
                   'payload', k.payload, 'at', n.finished_at) AS ev
        FROM new_rows n
        JOIN steps s ON s.id = n.step_id
        CROSS JOIN LATERAL (VALUES
            (0, CASE n.outcome WHEN 'completed' THEN 'step.completed'
                               WHEN 'failed' THEN 'step.failed'
                               WHEN 'lease_lost' THEN 'step.lease_lost' END,
             CASE WHEN n.outcome = 'completed' THEN '{}'::jsonb
                  ELSE jsonb_build_object('kind', n.error_kind, 'message', n.message,
                                          'retryable', n.retryable, 'decision', n.decision,
                                          'token', n.attempt_no) END),
            (1, CASE WHEN n.outcome = 'failed' AND n.decision = 'retry' THEN 'step.retry_scheduled'
                     WHEN n.outcome = 'failed' AND n.decision = 'exhausted' THEN 'step.exhausted' END,
             jsonb_build_object('next_ready_at', n.next_ready_at))
        ) AS k(sub, name, payload)
        WHERE n.task_id = ANY (v_tasks) AND k.name IS NOT NULL
    ) x;
    IF v_events IS NOT NULL THEN
        PERFORM tasker_hook_enqueue(v_events);
    END IF;
    RETURN NULL;
END
$$;
