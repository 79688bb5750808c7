-- Event hooks: a durable outbox filled in the same transaction as each state change, with
-- per-(hook, task) in-order delivery under leases, retries with backoff and dead-lettering.
-- Retry policies: who decided a failure's retry, recorded on the attempt.
-- See docs/hooks.md.

-- One row per hook of a template, from the template's definition (`hooks:`), written by a
-- trigger when the template is registered, so register_template needs no change.
CREATE TABLE template_hooks (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    template_id        bigint NOT NULL REFERENCES templates (id),
    position           int NOT NULL,
    component          text NOT NULL,
    patterns           text[] NOT NULL,
    limits             jsonb NOT NULL DEFAULT '{}',
    grants             jsonb NOT NULL DEFAULT '{}',
    max_attempts       int NOT NULL CHECK (max_attempts >= 1),
    backoff_base_ms    bigint NOT NULL,
    backoff_multiplier float8 NOT NULL,
    backoff_cap_ms     bigint NOT NULL,
    backoff_jitter     float8 NOT NULL,
    UNIQUE (template_id, position)
);

-- The outbox: one row per (event, subscribed hook). Rows of one (hook, task) are delivered
-- strictly in id order: only the lowest pending row of a (hook, task), flagged `head`, may
-- be claimed (the head is the per-hook, per-task delivery cursor). Ids are taken while
-- holding the task's row lock (see tasker_hook_lock_tasks), so within a task they follow
-- commit order.
CREATE TABLE hook_outbox (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook_id           bigint NOT NULL,
    task_id           bigint NOT NULL,
    step_id           bigint,
    step_name         text,
    event_name        text NOT NULL,
    attempt           int,
    payload           jsonb NOT NULL DEFAULT '{}',
    event_at          timestamptz NOT NULL,
    -- pending (not yet delivered), delivered, dead (gave up after max_attempts).
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    -- Finished deliveries that failed or succeeded (a lost lease does not count).
    attempts          int NOT NULL DEFAULT 0,
    -- Claim counter: the fencing token of a delivery lease.
    claims            int NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_error        text,
    finished_at       timestamptz,
    -- The lowest pending row of its (hook, task). Set on insert (under the task's row lock)
    -- and moved on by finish_hook_deliveries (under a share lock of the task row), so the
    -- claim reads only heads, however long a (hook, task) backlog grows.
    head              boolean NOT NULL DEFAULT false
);
CREATE INDEX hook_outbox_queue ON hook_outbox (next_attempt_at, id)
    WHERE state = 'pending' AND head;
CREATE INDEX hook_outbox_head ON hook_outbox (hook_id, task_id, id) WHERE state = 'pending';
CREATE INDEX hook_outbox_task ON hook_outbox (task_id, id);
ALTER TABLE hook_outbox SET (autovacuum_vacuum_scale_factor = 0.02);

-- Who decided a failed attempt's retry: 'builtin' or 'policy:<component>'; what it answered;
-- and why a policy was not used (it failed and the built-in policy decided instead).
ALTER TABLE attempts
    ADD COLUMN decided_by text,
    ADD COLUMN decision_detail text,
    ADD COLUMN policy_warning text;

-- ---------------------------------------------------------------------------------------------
-- Subscriptions

CREATE FUNCTION tasker_template_hooks_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO template_hooks (template_id, position, component, patterns, limits, grants,
                                max_attempts, backoff_base_ms, backoff_multiplier,
                                backoff_cap_ms, backoff_jitter)
    SELECT n.id, h.ord - 1, h.v->>'component',
           ARRAY(SELECT jsonb_array_elements_text(h.v->'events')),
           coalesce(h.v->'limits', '{}'), coalesce(h.v->'grants', '{}'),
           coalesce((h.v#>>'{delivery,max_attempts}')::int, 5),
           coalesce((h.v#>>'{delivery,backoff,base_ms}')::bigint, 1000),
           coalesce((h.v#>>'{delivery,backoff,multiplier}')::float8, 2),
           coalesce((h.v#>>'{delivery,backoff,cap_ms}')::bigint, 300000),
           coalesce((h.v#>>'{delivery,backoff,jitter}')::float8, 0.1)
    FROM new_rows n
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(n.definition->'hooks') = 'array' THEN n.definition->'hooks'
             ELSE '[]'::jsonb END) WITH ORDINALITY AS h(v, ord);
    RETURN NULL;
END
$$;

CREATE TRIGGER templates_hooks AFTER INSERT ON templates
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_template_hooks_insert();

-- `*`, `family.*` or an exact name; the same rules as tasker_core::events::matches.
CREATE FUNCTION tasker_event_matches(p_patterns text[], p_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(p_patterns) p
        WHERE p = '*' OR p = p_name
           OR (right(p, 2) = '.*' AND left(p_name, length(p) - 1) = left(p, -1)))
$$;

-- Lock (ascending id) the tasks among p_task_ids whose template has hooks, and return them.
-- Taking the task row lock before any outbox id is drawn makes a task's event ids follow
-- commit order (the lock is held to commit), so a delivered row never overtakes an
-- earlier, still uncommitted one of the same task. Every caller already locked its step
-- rows, so the lock order (steps, then tasks ascending) is kept.
CREATE FUNCTION tasker_hook_lock_tasks(p_task_ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v bigint[];
BEGIN
    IF p_task_ids IS NULL OR NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(x.id) INTO v FROM (
        SELECT t.id FROM tasks t
        WHERE t.id = ANY (p_task_ids)
          AND EXISTS (SELECT 1 FROM template_hooks h WHERE h.template_id = t.template_id)
        ORDER BY t.id FOR UPDATE OF t) x;
    RETURN v;
END
$$;

-- Fan events out to the subscribed hooks. p_events rows: (ord, task_id, step_id, step_name,
-- name, attempt, payload, at), inserted in (task, ord) order. The caller holds the tasks'
-- row locks (or created the tasks), so the head check cannot race a finish.
CREATE FUNCTION tasker_hook_enqueue(p_events jsonb) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_n int;
BEGIN
    INSERT INTO hook_outbox (hook_id, task_id, step_id, step_name, event_name, attempt, payload,
                             event_at, next_attempt_at, head)
    SELECT x.hook_id, x.task_id, x.step_id, x.step_name, x.name, x.attempt, x.payload, x.at,
           x.at,
           x.rn = 1 AND NOT EXISTS (SELECT 1 FROM hook_outbox p
                                    WHERE p.hook_id = x.hook_id AND p.task_id = x.task_id
                                      AND p.state = 'pending')
    FROM (
        SELECT h.id AS hook_id, e.task_id, e.step_id, e.step_name, e.name, e.attempt,
               coalesce(e.payload, '{}') AS payload, e.at, e.ord,
               row_number() OVER (PARTITION BY h.id, e.task_id ORDER BY e.ord) AS rn
        FROM jsonb_to_recordset(p_events) AS e(ord int, task_id bigint, step_id bigint,
                                               step_name text, name text, attempt int,
                                               payload jsonb, at timestamptz)
        JOIN tasks t ON t.id = e.task_id
        JOIN template_hooks h ON h.template_id = t.template_id
        WHERE tasker_event_matches(h.patterns, e.name)
    ) x
    ORDER BY x.task_id, x.ord, x.hook_id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Event sources: statement-level triggers, so a batch costs one call, and nothing at all
-- when no template has hooks.

-- step.completed / step.failed (+ step.retry_scheduled | step.exhausted) / step.lease_lost,
-- from the attempts row every ended claim writes.
CREATE FUNCTION tasker_hooks_from_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_tasks bigint[];
    v_events jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    v_tasks := tasker_hook_lock_tasks(ARRAY(SELECT DISTINCT n.task_id FROM new_rows n
                                            WHERE n.outcome IN ('completed', 'failed', 'lease_lost')));
    IF v_tasks IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(ev ORDER BY (ev->>'task_id')::bigint, (ev->>'ord')::int) INTO v_events
    FROM (
        SELECT jsonb_build_object(
                   'ord', row_number() OVER (ORDER BY n.step_id, n.attempt_no) * 2 + k.sub,
                   'task_id', n.task_id, 'step_id', n.step_id, 'step_name', s.name,
                   'name', k.name,
                   'attempt', CASE WHEN n.outcome = 'lease_lost' THEN s.attempts + 1
                                   ELSE s.attempts END,
                   'payload', k.payload, 'at', n.finished_at) AS ev
        FROM new_rows n
        JOIN steps s ON s.id = n.step_id
        CROSS JOIN LATERAL (VALUES
            (0, CASE n.outcome WHEN 'completed' THEN 'step.completed'
                               WHEN 'failed' THEN 'step.failed'
                               WHEN 'lease_lost' THEN 'step.lease_lost' END,
             CASE WHEN n.outcome = 'completed' THEN '{}'::jsonb
                  ELSE jsonb_build_object('kind', n.error_kind, 'message', n.message,
                                          'retryable', n.retryable, 'decision', n.decision,
                                          'token', n.attempt_no) END),
            (1, CASE WHEN n.outcome = 'failed' AND n.decision = 'retry' THEN 'step.retry_scheduled'
                     WHEN n.outcome = 'failed' AND n.decision = 'exhausted' THEN 'step.exhausted' END,
             jsonb_build_object('next_ready_at', n.next_ready_at))
        ) AS k(sub, name, payload)
        WHERE n.task_id = ANY (v_tasks) AND k.name IS NOT NULL
    ) x;
    IF v_events IS NOT NULL THEN
        PERFORM tasker_hook_enqueue(v_events);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER attempts_hooks AFTER INSERT ON attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_hooks_from_attempts();

-- task.started / completed / failed / cancelled / retry_requested, from task transitions.
CREATE FUNCTION tasker_hooks_from_task_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_tasks bigint[];
    v_events jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    v_tasks := tasker_hook_lock_tasks(ARRAY(SELECT DISTINCT n.task_id FROM new_rows n));
    IF v_tasks IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'ord', n.sort_key, 'task_id', n.task_id,
               'name', CASE WHEN n.to_state = 'in_progress' THEN 'task.started'
                            WHEN n.to_state = 'complete' THEN 'task.completed'
                            WHEN n.to_state = 'error' THEN 'task.failed'
                            WHEN n.to_state = 'cancelled' THEN 'task.cancelled'
                            WHEN n.to_state = 'pending' THEN 'task.retry_requested' END,
               'payload', jsonb_build_object('from', n.from_state) || n.metadata,
               'at', n.created_at) ORDER BY n.task_id, n.sort_key)
    INTO v_events
    FROM new_rows n WHERE n.task_id = ANY (v_tasks);
    IF v_events IS NOT NULL THEN
        PERFORM tasker_hook_enqueue(v_events);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_transitions_hooks AFTER INSERT ON task_transitions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_hooks_from_task_transitions();

-- task.created. The task row is new (only this transaction sees it): no lock needed.
CREATE FUNCTION tasker_hooks_from_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_events jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'ord', 0, 'task_id', n.id, 'name', 'task.created',
               'payload', jsonb_build_object('metadata', n.metadata), 'at', n.created_at)
               ORDER BY n.id)
    INTO v_events
    FROM new_rows n
    WHERE EXISTS (SELECT 1 FROM template_hooks h WHERE h.template_id = n.template_id);
    IF v_events IS NOT NULL THEN
        PERFORM tasker_hook_enqueue(v_events);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_hooks AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_hooks_from_tasks();

-- step.resolved_manually, from step transitions (the other step events come from attempts).
-- A row trigger with a WHEN clause: the hot path's many other transitions neither call it
-- nor pay for capturing a transition table.
CREATE FUNCTION tasker_hooks_from_step_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_task bigint;
    v_events jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN NULL;
    END IF;
    SELECT s.task_id INTO v_task FROM steps s WHERE s.id = NEW.step_id;
    IF tasker_hook_lock_tasks(ARRAY[v_task]) IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'ord', NEW.sort_key, 'task_id', s.task_id, 'step_id', s.id,
               'step_name', s.name, 'name', 'step.resolved_manually',
               'attempt', s.attempts,
               'payload', jsonb_build_object('from', NEW.from_state), 'at', NEW.created_at))
    INTO v_events
    FROM steps s WHERE s.id = NEW.step_id;
    IF v_events IS NOT NULL THEN
        PERFORM tasker_hook_enqueue(v_events);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER step_transitions_hooks AFTER INSERT ON step_transitions
    FOR EACH ROW WHEN (NEW.to_state = 'resolved_manually')
    EXECUTE FUNCTION tasker_hooks_from_step_transitions();

-- Handlers' custom events (`custom.<name>`), recorded by the worker in the same transaction
-- as the attempt's complete_steps / fail_steps call, after it. Only attempts that call
-- accepted (an attempts row for (step, token) that ended at p_now) are kept, so a refused
-- (stale) attempt's events are dropped with it.
CREATE FUNCTION enqueue_custom_events(
    p_step_ids bigint[],
    p_tokens bigint[],
    p_names text[],
    p_payloads jsonb[],
    p_now timestamptz DEFAULT now()
) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_tasks bigint[];
    v_events jsonb;
BEGIN
    PERFORM tasker_check_lengths('enqueue_custom_events', coalesce(cardinality(p_step_ids), 0),
        cardinality(p_tokens), cardinality(p_names), cardinality(p_payloads));
    IF NOT EXISTS (SELECT 1 FROM template_hooks) THEN
        RETURN 0;
    END IF;
    v_tasks := tasker_hook_lock_tasks(ARRAY(
        SELECT DISTINCT s.task_id FROM steps s WHERE s.id = ANY (p_step_ids)));
    IF v_tasks IS NULL THEN
        RETURN 0;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'ord', x.ord, 'task_id', s.task_id, 'step_id', s.id, 'step_name', s.name,
               'name', 'custom.' || x.name, 'attempt', s.attempts, 'payload', x.payload,
               'at', p_now) ORDER BY s.task_id, x.ord)
    INTO v_events
    FROM unnest(p_step_ids, p_tokens, p_names, p_payloads) WITH ORDINALITY
         AS x(sid, tok, name, payload, ord)
    JOIN steps s ON s.id = x.sid
    WHERE s.task_id = ANY (v_tasks)
      AND EXISTS (SELECT 1 FROM attempts a
                  WHERE a.step_id = x.sid AND a.attempt_no = x.tok AND a.finished_at = p_now
                    AND a.outcome IN ('completed', 'failed'));
    IF v_events IS NULL THEN
        RETURN 0;
    END IF;
    RETURN tasker_hook_enqueue(v_events);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Delivery

-- Claim up to p_limit deliverable outbox rows under a lease: pending, due, not leased (or the
-- lease expired: its worker died), and the head of its (hook, task) queue. SKIP LOCKED lets
-- several delivery loops share the outbox; only heads are ever claimable, so a (hook, task)
-- has at most one delivery in flight.
CREATE FUNCTION claim_hook_deliveries(
    p_worker text, p_limit int, p_lease interval, p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    delivery_id bigint, token int, hook_id bigint, component text, limits jsonb, grants jsonb,
    max_attempts int, template_key text, task_id bigint, step_id bigint, step_name text,
    event_name text, attempt int, payload jsonb, event_at timestamptz, delivery_no int
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
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
END
$$;

-- Record delivery outcomes. Fenced by the claim token. A failure retries after the hook's
-- backoff (seeded by the row id and the delivery number) until max_attempts, then the row
-- is parked as dead. A delivered or dead head passes `head` to the next pending row of its
-- (hook, task). The tasks' rows are share-locked first (ascending id), which orders this
-- against an enqueue for the same task (it holds them FOR UPDATE): the next head is never
-- missed. No hook code runs while the lock is held. Returns one row per input item.
CREATE FUNCTION finish_hook_deliveries(
    p_ids bigint[], p_tokens int[], p_ok boolean[], p_errors text[],
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (delivery_id bigint, accepted boolean, state text, next_attempt_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_states text[];
    v_next timestamptz[];
BEGIN
    PERFORM tasker_check_lengths('finish_hook_deliveries', coalesce(cardinality(p_ids), 0),
        cardinality(p_tokens), cardinality(p_ok), cardinality(p_errors));
    PERFORM 1 FROM tasks t
    WHERE t.id IN (SELECT o.task_id FROM hook_outbox o WHERE o.id = ANY (p_ids))
    ORDER BY t.id FOR SHARE;

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
        WHERE o.id = x.id AND o.claims = x.tok AND o.state = 'pending' AND h.id = o.hook_id
        RETURNING o.id, o.hook_id, o.task_id, o.state, o.next_attempt_at
    ), promoted AS (
        UPDATE hook_outbox n SET head = true
        FROM (SELECT DISTINCT ON (p.hook_id, p.task_id) p.id
              FROM hook_outbox p
              -- The statement's snapshot still shows the finished rows as pending: take
              -- the lowest pending row after each finished head.
              JOIN (SELECT u.hook_id, u.task_id, u.id FROM u WHERE u.state <> 'pending') g
                ON g.hook_id = p.hook_id AND g.task_id = p.task_id AND p.id > g.id
              WHERE p.state = 'pending'
              ORDER BY p.hook_id, p.task_id, p.id) nx
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

-- Per hook of a task (or of every task when p_task_id is NULL): delivery counts.
CREATE FUNCTION hook_delivery_counts(p_task_id bigint DEFAULT NULL)
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

-- ---------------------------------------------------------------------------------------------
-- Retry decisions

-- fail_steps, then who decided each accepted failure and what it answered, on its attempt.
-- A policy's delay arrives as p_retry_after_ms (so max_retry_after_ms and max_attempts
-- still bound it: a policy can never push a step past them).
CREATE FUNCTION fail_steps_decided(
    p_step_ids bigint[],
    p_tokens bigint[],
    p_error_kinds text[],
    p_messages text[],
    p_retryable boolean[],
    p_retry_after_ms bigint[],
    p_fuel bigint[],
    p_peak_memory_bytes bigint[],
    p_wall_us bigint[],
    p_plugin_hashes text[],
    p_decided_by text[],
    p_decision_details text[],
    p_policy_warnings text[],
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    step_id bigint,
    task_id bigint,
    accepted boolean,
    refusal text,
    decision text,
    next_ready_at timestamptz,
    task_state text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM tasker_check_lengths('fail_steps_decided', coalesce(cardinality(p_step_ids), 0),
        cardinality(p_decided_by), cardinality(p_decision_details), cardinality(p_policy_warnings));
    RETURN QUERY
    SELECT * FROM fail_steps(p_step_ids, p_tokens, p_error_kinds, p_messages, p_retryable,
                             p_retry_after_ms, p_fuel, p_peak_memory_bytes, p_wall_us,
                             p_plugin_hashes, p_now);
    UPDATE attempts a
    SET decided_by = x.by, decision_detail = x.detail, policy_warning = x.warn
    FROM unnest(p_step_ids, p_tokens, p_decided_by, p_decision_details, p_policy_warnings)
         AS x(sid, tok, by, detail, warn)
    WHERE a.step_id = x.sid AND a.attempt_no = x.tok AND a.outcome = 'failed'
      AND a.finished_at = p_now AND a.decided_by IS NULL;
END
$$;

-- When each step's first attempt started (for a retry policy's "time since first attempt").
CREATE FUNCTION first_attempt_at(p_step_ids bigint[])
RETURNS TABLE (step_id bigint, first_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.id, coalesce((SELECT min(a.started_at) FROM attempts a WHERE a.step_id = s.id),
                          s.last_attempted_at)
    FROM steps s WHERE s.id = ANY (p_step_ids)
$$;
