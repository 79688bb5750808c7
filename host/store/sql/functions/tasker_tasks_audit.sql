-- tasker_steps_audit for tasks: refuse an illegal task transition, write the audit rows.
CREATE OR REPLACE FUNCTION tasker_tasks_audit() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_nestloop = off SET enable_hashjoin = on
SET enable_mergejoin = off AS $$
DECLARE
    v_changed int;
    v_bad bigint;
    bad record;
BEGIN
    -- The hot functions write their own transitions (see the top of this file).
    IF current_setting('tasker.audited', true) = 'on' THEN
        RETURN NULL;
    END IF;
    SELECT count(*), min(n.id) FILTER (WHERE a.from_state IS NULL) INTO v_changed, v_bad
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    LEFT JOIN task_state_transitions a ON a.from_state = o.state AND a.to_state = n.state
    WHERE o.state <> n.state;
    IF v_changed = 0 THEN
        RETURN NULL;
    END IF;
    IF v_bad IS NOT NULL THEN
        SELECT o.id, o.state AS from_state, n.state AS to_state INTO bad
        FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE n.id = v_bad;
        RAISE EXCEPTION 'illegal task transition % -> % (task %)', bad.from_state, bad.to_state, bad.id
            USING ERRCODE = 'check_violation';
    END IF;

    WITH changed AS (
        SELECT n.id, o.state AS from_state, n.state AS to_state,
               jsonb_strip_nulls(jsonb_build_object(
                   'reason', nullif(current_setting('tasker.reason', true), ''))) AS metadata,
               n.updated_at AS at
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.state <> n.state
    ), prev AS (
        UPDATE task_transitions t SET most_recent = false
        WHERE t.most_recent AND t.task_id = ANY (ARRAY(SELECT c.id FROM changed c))
        RETURNING t.task_id, t.sort_key
    )
    INSERT INTO task_transitions (task_id, sort_key, from_state, to_state, metadata, most_recent, created_at)
    SELECT c.id, coalesce(p.sort_key, 0) + 1, c.from_state, c.to_state, c.metadata, true, c.at
    FROM changed c LEFT JOIN prev p ON p.task_id = c.id;
    RETURN NULL;
END
$$;
