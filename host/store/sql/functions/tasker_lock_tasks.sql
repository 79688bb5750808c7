-- Lock tasks in ascending id order (after their steps: the lock order everywhere).
CREATE OR REPLACE FUNCTION tasker_lock_tasks(p_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM tasks t WHERE t.id = ANY (p_ids) ORDER BY t.id FOR UPDATE;
END
$$;
