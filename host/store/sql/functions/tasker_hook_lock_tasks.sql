-- Lock (ascending id) the tasks among p_task_ids whose template has hooks, and return them.
-- Taking the task row lock before any outbox id is drawn makes a task's event ids follow
-- commit order (the lock is held to commit), so a delivered row never overtakes an
-- earlier, still uncommitted one of the same task. Every caller already locked its step
-- rows, so the lock order (steps, then tasks ascending) is kept.
CREATE OR REPLACE FUNCTION tasker_hook_lock_tasks(p_task_ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v bigint[];
BEGIN
    IF p_task_ids IS NULL OR NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(x.id) INTO v FROM (
        SELECT t.id FROM tasks t
        WHERE t.id = ANY (p_task_ids)
          AND EXISTS (SELECT 1 FROM template_hooks h WHERE h.template_id = t.template_id)
        ORDER BY t.id FOR UPDATE OF t) x;
    RETURN v;
END
$$;
