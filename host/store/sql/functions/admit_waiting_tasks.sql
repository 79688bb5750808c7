-- Admit what the key lines can take now: delayed tasks whose run_at has passed, and any
-- head a release could not admit (a smaller limit before it). The lease sweeper calls it;
-- with no waiting task it is one probe of tasks_concurrency_waiting.
CREATE OR REPLACE FUNCTION admit_waiting_tasks(p_now timestamptz DEFAULT now())
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_key text;
    v_n int := 0;
BEGIN
    FOR v_key IN
        SELECT DISTINCT t.concurrency_key
        FROM tasks t JOIN concurrency_keys k ON k.key = t.concurrency_key
        WHERE t.concurrency_state = 'waiting' AND (t.run_at IS NULL OR t.run_at <= p_now)
          AND k.holding < t.concurrency_limit
        ORDER BY 1
    LOOP
        v_n := v_n + tasker_concurrency_admit(v_key, p_now);
    END LOOP;
    RETURN v_n;
END
$$;
