-- task.created. The task row is new (only this transaction sees it): no lock needed.
CREATE OR REPLACE FUNCTION tasker_hooks_from_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_events jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'ord', 0, 'task_id', n.id, 'name', 'task.created',
               'payload', jsonb_build_object('metadata', n.metadata), 'at', n.created_at)
               ORDER BY n.id)
    INTO v_events
    FROM new_rows n
    WHERE EXISTS (SELECT 1 FROM template_hooks h WHERE h.template_id = n.template_id);
    IF v_events IS NOT NULL THEN
        PERFORM tasker_hook_enqueue(v_events);
    END IF;
    RETURN NULL;
END
$$;
