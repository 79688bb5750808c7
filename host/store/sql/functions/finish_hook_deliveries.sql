-- Record delivery outcomes. Fenced by the claim token. A failure retries after the hook's
-- backoff (seeded by the row id and the delivery number) until max_attempts, then the row
-- is parked as dead. A delivered or dead head passes `head` to the next pending row of its
-- (hook, task). The tasks' rows are share-locked first (ascending id), which orders this
-- against an enqueue for the same task (it holds them FOR UPDATE): the next head is never
-- missed. Rows found by primary key and updated by ctid, the next head one index probe:
-- docs/store.md ("finish_hook_deliveries").
CREATE OR REPLACE FUNCTION finish_hook_deliveries(
    p_ids bigint[], p_tokens int[], p_ok boolean[], p_errors text[],
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (delivery_id bigint, accepted boolean, state text, next_attempt_at timestamptz)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
    v_tids tid[];
    v_ids bigint[];
    v_states text[];
    v_next timestamptz[];
BEGIN
    PERFORM tasker_check_lengths('finish_hook_deliveries', coalesce(cardinality(p_ids), 0),
        cardinality(p_tokens), cardinality(p_ok), cardinality(p_errors));
    PERFORM 1 FROM tasks t
    WHERE t.id IN (SELECT o.task_id FROM hook_outbox o WHERE o.id = ANY (p_ids))
    ORDER BY t.id FOR SHARE;

    -- The batch's rows, through the primary key; the update reads them by ctid. A row
    -- claimed again meanwhile (its lease expired) has moved on: the update skips it and the
    -- outcome is refused as a lost lease, as its changed token would have had it refused.
    SELECT array_agg(o.ctid) INTO v_tids FROM hook_outbox o WHERE o.id = ANY (p_ids);

    WITH x AS (
        SELECT DISTINCT ON (x.id) x.* FROM unnest(p_ids, p_tokens, p_ok, p_errors)
            WITH ORDINALITY AS x(id, tok, ok, err, ord)
        ORDER BY x.id, x.ord
    ), u AS (
        UPDATE hook_outbox o
        SET attempts = o.attempts + 1,
            state = CASE WHEN x.ok THEN 'delivered'
                         WHEN o.attempts + 1 >= h.max_attempts THEN 'dead'
                         ELSE 'pending' END,
            next_attempt_at = CASE WHEN x.ok OR o.attempts + 1 >= h.max_attempts
                                   THEN o.next_attempt_at
                                   ELSE p_now + tasker_ms(tasker_backoff_ms(
                                       h.backoff_base_ms, h.backoff_multiplier, h.backoff_cap_ms,
                                       h.backoff_jitter, o.id, o.attempts + 1)) END,
            last_error = CASE WHEN x.ok THEN o.last_error ELSE left(x.err, 4000) END,
            lease_owner = NULL,
            lease_expires_at = NULL,
            finished_at = CASE WHEN x.ok OR o.attempts + 1 >= h.max_attempts THEN p_now END,
            head = NOT (x.ok OR o.attempts + 1 >= h.max_attempts)
        FROM x, template_hooks h
        WHERE o.ctid = ANY (v_tids) AND o.id = x.id AND o.claims = x.tok
          AND o.state = 'pending' AND h.id = o.hook_id
        RETURNING o.id, o.hook_id, o.task_id, o.state, o.next_attempt_at
    ), promoted AS (
        -- The statement's snapshot still shows the finished rows as pending: take the lowest
        -- pending row after each finished head, one index probe each.
        UPDATE hook_outbox n SET head = true
        FROM (SELECT nx.id
              FROM u g
              CROSS JOIN LATERAL (SELECT p.id FROM hook_outbox p
                                  WHERE p.hook_id = g.hook_id AND p.task_id = g.task_id
                                    AND p.id > g.id AND p.state = 'pending'
                                  ORDER BY p.id LIMIT 1) nx
              WHERE g.state <> 'pending') nx
        WHERE n.id = nx.id
        RETURNING n.id
    )
    SELECT array_agg(u.id), array_agg(u.state), array_agg(u.next_attempt_at)
    INTO v_ids, v_states, v_next
    FROM u;

    RETURN QUERY
    SELECT y.id, r.id IS NOT NULL, r.state, r.next_attempt_at
    FROM unnest(p_ids) WITH ORDINALITY AS y(id, ord)
    LEFT JOIN unnest(v_ids, v_states, v_next) AS r(id, state, next_attempt_at) ON r.id = y.id
    ORDER BY y.ord;
END
$$;
