-- Every state change of steps: refuse an illegal one (23514), then write the audit rows
-- (flip the previous most_recent, insert the next sort_key). Returns at once while
-- tasker.audited is on (the hot functions write their own rows). Statement level, so a
-- batch costs one call. Previous rows are looked up through the index with seq scans off:
-- a cached plan of a join, made while the table was small, kept hashing the whole
-- most_recent index as it grew (docs/store.md, "Audit triggers").
CREATE OR REPLACE FUNCTION tasker_steps_audit() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_nestloop = off SET enable_hashjoin = on
SET enable_mergejoin = off AS $$
DECLARE
    v_bad bigint;
    bad record;
BEGIN
    -- The hot functions write their own transitions (see the top of this file).
    IF current_setting('tasker.audited', true) = 'on' THEN
        RETURN NULL;
    END IF;
    WITH changed AS (
        SELECT n.id, o.state AS from_state, n.state AS to_state, a.from_state IS NULL AS illegal,
               jsonb_strip_nulls(jsonb_build_object(
                   'reason', nullif(current_setting('tasker.reason', true), ''),
                   'worker', n.worker,
                   'attempt', n.claim_count,
                   'error_kind', CASE WHEN n.state IN ('waiting_for_retry', 'error')
                                      THEN n.last_error_kind END)) AS metadata,
               n.updated_at AS at
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        LEFT JOIN step_state_transitions a ON a.from_state = o.state AND a.to_state = n.state
        WHERE o.state <> n.state
    ), prev AS (
        UPDATE step_transitions t SET most_recent = false
        WHERE t.most_recent AND t.step_id = ANY (ARRAY(SELECT c.id FROM changed c))
        RETURNING t.step_id, t.sort_key
    ), ins AS (
        INSERT INTO step_transitions (step_id, sort_key, from_state, to_state, metadata,
                                      most_recent, created_at)
        SELECT c.id, coalesce(p.sort_key, 0) + 1, c.from_state, c.to_state, c.metadata, true, c.at
        FROM changed c LEFT JOIN prev p ON p.step_id = c.id
    )
    SELECT min(c.id) FILTER (WHERE c.illegal) INTO v_bad FROM changed c;
    IF v_bad IS NOT NULL THEN
        SELECT o.id, o.state AS from_state, n.state AS to_state INTO bad
        FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE n.id = v_bad;
        RAISE EXCEPTION 'illegal step transition % -> % (step %)', bad.from_state, bad.to_state, bad.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
