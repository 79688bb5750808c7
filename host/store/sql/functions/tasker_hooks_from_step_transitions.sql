-- step.resolved_manually, from step transitions (the other step events come from attempts).
-- Called by a row trigger with a WHEN clause (triggers.sql), so the hot path's many other
-- transitions do not pay for it.
CREATE OR REPLACE FUNCTION tasker_hooks_from_step_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_task bigint;
    v_events jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    SELECT s.task_id INTO v_task FROM steps s WHERE s.id = NEW.step_id;
    IF tasker_hook_lock_tasks(ARRAY[v_task]) IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'ord', NEW.sort_key, 'task_id', s.task_id, 'step_id', s.id,
               'step_name', s.name, 'name', 'step.resolved_manually',
               'attempt', s.attempts,
               'payload', jsonb_build_object('from', NEW.from_state), 'at', NEW.created_at))
    INTO v_events
    FROM steps s WHERE s.id = NEW.step_id;
    IF v_events IS NOT NULL THEN
        PERFORM tasker_hook_enqueue(v_events);
    END IF;
    RETURN NULL;
END
$$;
