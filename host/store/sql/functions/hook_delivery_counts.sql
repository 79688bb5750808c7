-- Per hook of a task (or of every task when p_task_id is NULL): delivery counts.
CREATE OR REPLACE FUNCTION hook_delivery_counts(p_task_id bigint DEFAULT NULL)
RETURNS TABLE (hook_id bigint, component text, pending bigint, delivered bigint, dead bigint)
LANGUAGE sql STABLE AS $$
    SELECT h.id, h.component,
           count(*) FILTER (WHERE o.state = 'pending'),
           count(*) FILTER (WHERE o.state = 'delivered'),
           count(*) FILTER (WHERE o.state = 'dead')
    FROM hook_outbox o JOIN template_hooks h ON h.id = o.hook_id
    WHERE p_task_id IS NULL OR o.task_id = p_task_id
    GROUP BY h.id, h.component
    ORDER BY h.id
$$;
