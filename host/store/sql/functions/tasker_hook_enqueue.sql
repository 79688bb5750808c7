-- Fan events out to the subscribed hooks. p_events rows: (ord, task_id, step_id, step_name,
-- name, attempt, payload, at), inserted in (task, ord) order. The caller holds the tasks'
-- row locks (or created the tasks), so the head check cannot race a finish.
CREATE OR REPLACE FUNCTION tasker_hook_enqueue(p_events jsonb) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_n int;
BEGIN
    INSERT INTO hook_outbox (hook_id, task_id, step_id, step_name, event_name, attempt, payload,
                             event_at, next_attempt_at, head)
    SELECT x.hook_id, x.task_id, x.step_id, x.step_name, x.name, x.attempt, x.payload, x.at,
           x.at,
           x.rn = 1 AND NOT EXISTS (SELECT 1 FROM hook_outbox p
                                    WHERE p.hook_id = x.hook_id AND p.task_id = x.task_id
                                      AND p.state = 'pending')
    FROM (
        SELECT h.id AS hook_id, e.task_id, e.step_id, e.step_name, e.name, e.attempt,
               coalesce(e.payload, '{}') AS payload, e.at, e.ord,
               row_number() OVER (PARTITION BY h.id, e.task_id ORDER BY e.ord) AS rn
        FROM jsonb_to_recordset(p_events) AS e(ord int, task_id bigint, step_id bigint,
                                               step_name text, name text, attempt int,
                                               payload jsonb, at timestamptz)
        JOIN tasks t ON t.id = e.task_id
        JOIN template_hooks h ON h.template_id = t.template_id
        WHERE tasker_event_matches(h.patterns, e.name)
    ) x
    ORDER BY x.task_id, x.ord, x.hook_id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;
