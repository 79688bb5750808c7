-- task.started / completed / failed / cancelled / retry_requested, from task transitions.
CREATE OR REPLACE FUNCTION tasker_hooks_from_task_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_tasks bigint[];
    v_events jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    v_tasks := tasker_hook_lock_tasks(ARRAY(SELECT DISTINCT n.task_id FROM new_rows n));
    IF v_tasks IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'ord', n.sort_key, 'task_id', n.task_id,
               'name', CASE WHEN n.to_state = 'in_progress' THEN 'task.started'
                            WHEN n.to_state = 'complete' THEN 'task.completed'
                            WHEN n.to_state = 'error' THEN 'task.failed'
                            WHEN n.to_state = 'cancelled' THEN 'task.cancelled'
                            WHEN n.to_state = 'pending' THEN 'task.retry_requested' END,
               'payload', jsonb_build_object('from', n.from_state) || n.metadata,
               'at', n.created_at) ORDER BY n.task_id, n.sort_key)
    INTO v_events
    FROM new_rows n WHERE n.task_id = ANY (v_tasks);
    IF v_events IS NOT NULL THEN
        PERFORM tasker_hook_enqueue(v_events);
    END IF;
    RETURN NULL;
END
$$;
