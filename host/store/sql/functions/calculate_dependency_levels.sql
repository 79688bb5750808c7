-- Longest path from a root (level 0) to each step. Enumerates paths, so it is meant for
-- inspection, not the hot path.
CREATE OR REPLACE FUNCTION calculate_dependency_levels(p_task_id bigint)
RETURNS TABLE (step_id bigint, name text, dependency_level int)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk (step_id, level) AS (
        SELECT s.id, 0
        FROM steps s
        WHERE s.task_id = p_task_id
          AND NOT EXISTS (SELECT 1 FROM edges e WHERE e.child_id = s.id)
        UNION ALL
        SELECT e.child_id, w.level + 1
        FROM walk w JOIN edges e ON e.parent_id = w.step_id
    )
    SELECT s.id, s.name, max(w.level)::int
    FROM walk w JOIN steps s ON s.id = w.step_id
    GROUP BY s.id, s.name
    ORDER BY max(w.level), s.id
$$;
