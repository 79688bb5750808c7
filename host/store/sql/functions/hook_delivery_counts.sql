-- Delivery counts per hook: of every hook, with zeros for one that has delivered nothing
-- (p_task_id NULL), or of the hooks that have deliveries for one task.
CREATE OR REPLACE FUNCTION hook_delivery_counts(p_task_id bigint DEFAULT NULL)
RETURNS TABLE (hook_id bigint, component text, pending bigint, delivered bigint, dead bigint)
LANGUAGE sql STABLE AS $$
    SELECT h.id, h.component,
           count(o.id) FILTER (WHERE o.state = 'pending'),
           count(o.id) FILTER (WHERE o.state = 'delivered'),
           count(o.id) FILTER (WHERE o.state = 'dead')
    FROM template_hooks h
    LEFT JOIN hook_outbox o
           ON o.hook_id = h.id AND (p_task_id IS NULL OR o.task_id = p_task_id)
    WHERE p_task_id IS NULL OR o.id IS NOT NULL
    GROUP BY h.id, h.component
    ORDER BY h.id
$$;
