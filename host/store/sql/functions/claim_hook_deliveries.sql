-- Claim up to p_limit deliverable outbox rows under a lease: pending, due, not leased (or the
-- lease expired: its worker died), and the head of its (hook, task) queue. SKIP LOCKED lets
-- several delivery loops share the outbox; only heads are ever claimable, so a (hook, task)
-- has at most one delivery in flight.
-- With p_task_id, only that task's rows (the deliverer of a worker scoped to its task, as
-- `tasker run` starts): its own statement, so the unscoped claim's plan is unchanged.
CREATE OR REPLACE FUNCTION claim_hook_deliveries(
    p_worker text, p_limit int, p_lease interval, p_now timestamptz DEFAULT now(),
    p_task_id bigint DEFAULT NULL
) RETURNS TABLE (
    delivery_id bigint, token int, hook_id bigint, component text, limits jsonb, grants jsonb,
    max_attempts int, template_key text, task_id bigint, step_id bigint, step_name text,
    event_name text, attempt int, payload jsonb, event_at timestamptz, delivery_no int
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF p_task_id IS NULL THEN
        RETURN QUERY
        WITH c AS (
            SELECT o.id FROM hook_outbox o
            WHERE o.state = 'pending' AND o.head AND o.next_attempt_at <= p_now
              AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= p_now)
            ORDER BY o.next_attempt_at, o.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ), u AS (
            UPDATE hook_outbox o
            SET claims = o.claims + 1, lease_owner = p_worker, lease_expires_at = p_now + p_lease
            FROM c WHERE o.id = c.id
            RETURNING o.*
        )
        SELECT u.id, u.claims, u.hook_id, h.component, h.limits, h.grants, h.max_attempts,
               tp.template_key, u.task_id, u.step_id, u.step_name, u.event_name, u.attempt,
               u.payload, u.event_at, u.attempts + 1
        FROM u
        JOIN template_hooks h ON h.id = u.hook_id
        JOIN templates tp ON tp.id = h.template_id
        ORDER BY u.id;
    ELSE
        RETURN QUERY
        WITH c AS (
            SELECT o.id FROM hook_outbox o
            WHERE o.task_id = p_task_id
              AND o.state = 'pending' AND o.head AND o.next_attempt_at <= p_now
              AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= p_now)
            ORDER BY o.next_attempt_at, o.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ), u AS (
            UPDATE hook_outbox o
            SET claims = o.claims + 1, lease_owner = p_worker, lease_expires_at = p_now + p_lease
            FROM c WHERE o.id = c.id
            RETURNING o.*
        )
        SELECT u.id, u.claims, u.hook_id, h.component, h.limits, h.grants, h.max_attempts,
               tp.template_key, u.task_id, u.step_id, u.step_name, u.event_name, u.attempt,
               u.payload, u.event_at, u.attempts + 1
        FROM u
        JOIN template_hooks h ON h.id = u.hook_id
        JOIN templates tp ON tp.id = h.template_id
        ORDER BY u.id;
    END IF;
END
$$;
