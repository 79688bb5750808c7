-- Admit waiting tasks of one concurrency key while it has room (tasker_core::concurrency):
-- the line's head by claim key (priority with aging over its creation), once its run_at has
-- passed, while the key holds fewer slots than the head's limit. An admitted task holds a
-- slot and its steps whose parents are done (ready_at 'infinity' while it waited) are ready
-- now. `p_freed`: slots the caller has just given up (the release trigger's 1), counted
-- here so that a release that admits a head leaves the key's row as it was (one write less
-- per finished task). Returns how many were admitted. Holds the key's row lock until the
-- transaction ends, as every change of `holding` does: that lock is what makes a limit
-- exact across workers.
CREATE OR REPLACE FUNCTION tasker_concurrency_admit(p_key text, p_now timestamptz,
                                                    p_freed int DEFAULT 0)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_holding int;
    v_next record;
    v_n int := 0;
    v_ready int := 0;
    v_r int;
BEGIN
    SELECT k.holding INTO v_holding FROM concurrency_keys k WHERE k.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    v_holding := v_holding - p_freed;
    LOOP
        SELECT t.id, t.concurrency_limit INTO v_next
        FROM tasks t
        WHERE t.concurrency_key = p_key AND t.concurrency_state = 'waiting'
          AND (t.run_at IS NULL OR t.run_at <= p_now)
        ORDER BY tasker_claim_key(t.created_at, t.priority), t.id
        LIMIT 1
        FOR UPDATE;
        EXIT WHEN NOT FOUND OR v_holding >= v_next.concurrency_limit;
        UPDATE tasks t SET concurrency_state = 'holding' WHERE t.id = v_next.id;
        UPDATE steps s SET ready_at = p_now, updated_at = p_now
        WHERE s.task_id = v_next.id AND s.ready_at = 'infinity';
        GET DIAGNOSTICS v_r = ROW_COUNT;
        v_ready := v_ready + v_r;
        v_holding := v_holding + 1;
        v_n := v_n + 1;
    END LOOP;
    IF v_n <> p_freed THEN
        UPDATE concurrency_keys k SET holding = k.holding + v_n - p_freed WHERE k.key = p_key;
    END IF;
    IF v_ready > 0 THEN
        PERFORM pg_notify('tasker_ready', v_ready::text);
    END IF;
    RETURN v_n;
END
$$;
