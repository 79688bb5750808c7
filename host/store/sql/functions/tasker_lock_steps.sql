-- Lock steps (and optionally their children) in ascending id order: the lock order of every
-- function (steps, then tasks). One index scan of the primary key: an IN (... UNION ...)
-- form has a generic plan that reads the whole steps table.
CREATE OR REPLACE FUNCTION tasker_lock_steps(p_ids bigint[], p_with_children boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_with_children THEN
        p_ids := p_ids || ARRAY(SELECT e.child_id FROM edges e WHERE e.parent_id = ANY (p_ids));
    END IF;
    PERFORM 1 FROM steps s WHERE s.id = ANY (p_ids) ORDER BY s.id FOR UPDATE;
END
$$;
