-- Event hooks on SQLite: the outbox of migrations/0005_hooks.sql, filled by triggers in the
-- same transaction as each state change, with the same rows, event names, payloads and
-- `head` flags. Representation as in 0001_schema.sql (instants INTEGER µs, JSON as TEXT,
-- booleans 0/1; a hook's patterns are a JSON array of strings). The attempts columns of
-- retry policies (decided_by, decision_detail, policy_warning) are already in 0001.
--
-- PostgreSQL's event triggers are statement-level and sort a statement's events by
-- (task, order within the task, hook). SQLite's are row-level: events are written in the
-- order the source rows are, so the operations (host/store/src/sqlite/) write those rows in
-- the order PostgreSQL sorts them; see host/store/src/sqlite/hooks.rs.

-- One row per hook of a template, from the template's definition (`hooks:`).
CREATE TABLE template_hooks (
    id                  INTEGER PRIMARY KEY,
    template_id         INTEGER NOT NULL REFERENCES templates (id),
    position            INTEGER NOT NULL,
    component           TEXT NOT NULL,
    patterns            TEXT NOT NULL,
    limits              TEXT NOT NULL DEFAULT '{}',
    grants              TEXT NOT NULL DEFAULT '{}',
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    backoff_base_ms     INTEGER NOT NULL,
    backoff_multiplier  REAL NOT NULL,
    backoff_cap_ms      INTEGER NOT NULL,
    backoff_jitter      REAL NOT NULL,
    UNIQUE (template_id, position)
);

-- The outbox: one row per (event, subscribed hook). Rows of one (hook, task) are delivered
-- strictly in id order: only the lowest pending row of a (hook, task), flagged `head`, may
-- be claimed. PostgreSQL draws ids under the task's row lock so that they follow commit
-- order; here there is one writer at a time, so ids follow commit order by construction.
CREATE TABLE hook_outbox (
    id                INTEGER PRIMARY KEY,
    hook_id           INTEGER NOT NULL,
    task_id           INTEGER NOT NULL,
    step_id           INTEGER,
    step_name         TEXT,
    event_name        TEXT NOT NULL,
    attempt           INTEGER,
    payload           TEXT NOT NULL DEFAULT '{}',
    event_at          INTEGER NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    claims            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    finished_at       INTEGER,
    head              INTEGER NOT NULL DEFAULT 0
);
-- The claim's WHERE repeats `state = 'pending' AND head` so that it uses this index.
CREATE INDEX hook_outbox_queue ON hook_outbox (next_attempt_at, id)
    WHERE state = 'pending' AND head;
CREATE INDEX hook_outbox_head ON hook_outbox (hook_id, task_id, id) WHERE state = 'pending';
CREATE INDEX hook_outbox_task ON hook_outbox (task_id, id);

-- ---------------------------------------------------------------------------------------------
-- Subscriptions

-- tasker_template_hooks_insert. Positions follow the definition's array order.
CREATE TRIGGER templates_hooks AFTER INSERT ON templates
WHEN json_type(NEW.definition, '$.hooks') = 'array'
BEGIN
    INSERT INTO template_hooks (template_id, position, component, patterns, limits, grants,
                                max_attempts, backoff_base_ms, backoff_multiplier,
                                backoff_cap_ms, backoff_jitter)
    SELECT NEW.id, h.key, h.value ->> '$.component',
           (SELECT json_group_array(e.value) FROM json_each(h.value, '$.events') e),
           coalesce(h.value -> '$.limits', '{}'), coalesce(h.value -> '$.grants', '{}'),
           coalesce(h.value ->> '$.delivery.max_attempts', 5),
           coalesce(h.value ->> '$.delivery.backoff.base_ms', 1000),
           coalesce(h.value ->> '$.delivery.backoff.multiplier', 2),
           coalesce(h.value ->> '$.delivery.backoff.cap_ms', 300000),
           coalesce(h.value ->> '$.delivery.backoff.jitter', 0.1)
    FROM json_each(NEW.definition, '$.hooks') h
    ORDER BY h.key;
END;

-- ---------------------------------------------------------------------------------------------
-- Fan-out (tasker_hook_enqueue): inserting an event into this view writes one outbox row per
-- subscribed hook of the event's task, in hook id order. A row is its (hook, task)'s head
-- when that queue has no pending row yet; row-level triggers see the rows written before
-- them, which is what PostgreSQL's row_number() = 1 provides within a statement.
-- `payload` is JSON text (NULL: '{}').
CREATE VIEW hook_events AS
SELECT NULL AS task_id, NULL AS step_id, NULL AS step_name, NULL AS name, NULL AS attempt,
       NULL AS payload, NULL AS at
WHERE 0;

-- A pattern matches as in tasker_event_matches (and tasker_core::events::matches): `*`, the
-- exact name, or `family.*` for a name starting with `family.`. substr and length count
-- characters, like PostgreSQL's left and length; `=` compares bytes.
CREATE TRIGGER hook_events_enqueue INSTEAD OF INSERT ON hook_events
BEGIN
    INSERT INTO hook_outbox (hook_id, task_id, step_id, step_name, event_name, attempt, payload,
                             event_at, next_attempt_at, head)
    SELECT h.id, NEW.task_id, NEW.step_id, NEW.step_name, NEW.name, NEW.attempt,
           coalesce(NEW.payload, '{}'), NEW.at, NEW.at,
           NOT EXISTS (SELECT 1 FROM hook_outbox p
                       WHERE p.hook_id = h.id AND p.task_id = NEW.task_id
                         AND p.state = 'pending')
    FROM tasks t
    JOIN template_hooks h ON h.template_id = t.template_id
    WHERE t.id = NEW.task_id
      AND EXISTS (SELECT 1 FROM json_each(h.patterns) p
                  WHERE p.value = '*' OR p.value = NEW.name
                     OR (substr(p.value, -2) = '.*'
                         AND substr(NEW.name, 1, length(p.value) - 1)
                             = substr(p.value, 1, length(p.value) - 1)))
    ORDER BY h.id;
END;

-- ---------------------------------------------------------------------------------------------
-- Event sources. Each fires only for tasks whose template has hooks (PostgreSQL's
-- tasker_hook_lock_tasks filter), so templates without hooks pay one index probe.

-- step.completed / step.failed (+ step.retry_scheduled | step.exhausted) / step.lease_lost,
-- from the attempts row every ended claim writes (tasker_hooks_from_attempts). The step row
-- is read as it is now: the operations insert attempts after updating their steps, as
-- PostgreSQL's statement trigger reads them after the statement. Timestamps in payloads are
-- written as PostgreSQL's to_json writes a timestamptz in UTC (trailing zeros of the
-- fraction dropped).
CREATE TRIGGER attempts_hooks AFTER INSERT ON attempts
WHEN NEW.outcome IN ('completed', 'failed', 'lease_lost')
 AND EXISTS (SELECT 1 FROM tasks t JOIN template_hooks h ON h.template_id = t.template_id
             WHERE t.id = NEW.task_id)
BEGIN
    INSERT INTO hook_events (task_id, step_id, step_name, name, attempt, payload, at)
    SELECT NEW.task_id, s.id, s.name,
           CASE NEW.outcome WHEN 'completed' THEN 'step.completed'
                            WHEN 'failed' THEN 'step.failed'
                            ELSE 'step.lease_lost' END,
           CASE WHEN NEW.outcome = 'lease_lost' THEN s.attempts + 1 ELSE s.attempts END,
           CASE WHEN NEW.outcome = 'completed' THEN '{}'
                ELSE json_object('kind', NEW.error_kind, 'message', NEW.message,
                                 'retryable', json(CASE NEW.retryable WHEN 0 THEN 'false'
                                                                      WHEN 1 THEN 'true' END),
                                 'decision', NEW.decision, 'token', NEW.attempt_no) END,
           NEW.finished_at
    FROM steps s WHERE s.id = NEW.step_id;

    INSERT INTO hook_events (task_id, step_id, step_name, name, attempt, payload, at)
    SELECT NEW.task_id, s.id, s.name,
           CASE NEW.decision WHEN 'retry' THEN 'step.retry_scheduled' ELSE 'step.exhausted' END,
           s.attempts,
           json_object('next_ready_at',
               CASE WHEN NEW.next_ready_at IS NOT NULL THEN
                   strftime('%Y-%m-%dT%H:%M:%S',
                            (NEW.next_ready_at - f.us) / 1000000, 'unixepoch')
                   || CASE WHEN f.us = 0 THEN ''
                           ELSE '.' || rtrim(printf('%06d', f.us), '0') END
                   || '+00:00'
               END),
           NEW.finished_at
    FROM steps s,
         -- The fraction of a second in µs, also for instants before 1970.
         (SELECT ((NEW.next_ready_at % 1000000) + 1000000) % 1000000 AS us) f
    WHERE s.id = NEW.step_id AND NEW.outcome = 'failed'
      AND NEW.decision IN ('retry', 'exhausted');
END;

-- task.started / completed / failed / cancelled / retry_requested, from task transitions
-- (tasker_hooks_from_task_transitions). Transition metadata is a flat object of non-null
-- strings, so json_patch is PostgreSQL's `||` here.
CREATE TRIGGER task_transitions_hooks AFTER INSERT ON task_transitions
WHEN EXISTS (SELECT 1 FROM tasks t JOIN template_hooks h ON h.template_id = t.template_id
             WHERE t.id = NEW.task_id)
BEGIN
    INSERT INTO hook_events (task_id, step_id, step_name, name, attempt, payload, at)
    VALUES (NEW.task_id, NULL, NULL,
            CASE NEW.to_state WHEN 'in_progress' THEN 'task.started'
                              WHEN 'complete' THEN 'task.completed'
                              WHEN 'error' THEN 'task.failed'
                              WHEN 'cancelled' THEN 'task.cancelled'
                              WHEN 'pending' THEN 'task.retry_requested' END,
            NULL, json_patch(json_object('from', NEW.from_state), NEW.metadata),
            NEW.created_at);
END;

-- task.created (tasker_hooks_from_tasks).
CREATE TRIGGER tasks_hooks AFTER INSERT ON tasks
WHEN EXISTS (SELECT 1 FROM template_hooks h WHERE h.template_id = NEW.template_id)
BEGIN
    INSERT INTO hook_events (task_id, step_id, step_name, name, attempt, payload, at)
    VALUES (NEW.id, NULL, NULL, 'task.created', NULL,
            json_object('metadata', json(NEW.metadata)), NEW.created_at);
END;

-- step.resolved_manually, from step transitions (tasker_hooks_from_step_transitions); the
-- other step events come from attempts.
CREATE TRIGGER step_transitions_hooks AFTER INSERT ON step_transitions
WHEN NEW.to_state = 'resolved_manually'
 AND EXISTS (SELECT 1 FROM steps s JOIN tasks t ON t.id = s.task_id
             JOIN template_hooks h ON h.template_id = t.template_id
             WHERE s.id = NEW.step_id)
BEGIN
    INSERT INTO hook_events (task_id, step_id, step_name, name, attempt, payload, at)
    SELECT s.task_id, s.id, s.name, 'step.resolved_manually', s.attempts,
           json_object('from', NEW.from_state), NEW.created_at
    FROM steps s WHERE s.id = NEW.step_id;
END;
