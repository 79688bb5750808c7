-- The event log on SQLite: migrations/0014_event_log.sql's table and order (docs/store.md,
-- "The event log"). Representation as in 0001_schema.sql.
--
-- PostgreSQL orders events by the writing transaction's xid and reads only below the xmin
-- horizon. Here one writer at a time means a counter is commit order: tasker_ctx.tx_seq is
-- bumped once at the start of every write transaction (SqliteStore::write), and every event
-- row takes its value as `tx`. A reader's snapshot therefore holds every transaction up to
-- some tx and none after it, so a cursor never skips an event that commits later.
-- Rows written before this migration have tx 0.
ALTER TABLE tasker_ctx ADD COLUMN tx_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_transitions ADD COLUMN tx INTEGER NOT NULL DEFAULT 0;
ALTER TABLE step_transitions ADD COLUMN tx INTEGER NOT NULL DEFAULT 0;
CREATE INDEX task_transitions_tx ON task_transitions (tx, task_id, sort_key);
CREATE INDEX step_transitions_tx ON step_transitions (tx, step_id, sort_key);

-- Handlers' custom events, of every task (the outbox keeps them only for hooks), written by
-- host/store/src/sqlite/hooks.rs enqueue_custom_events for accepted attempts.
CREATE TABLE task_events_custom (
    id          INTEGER PRIMARY KEY,
    tx          INTEGER NOT NULL,
    task_id     INTEGER NOT NULL,
    step_id     INTEGER NOT NULL,
    step_name   TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);
CREATE INDEX task_events_custom_tx ON task_events_custom (tx, id);
CREATE INDEX task_events_custom_task ON task_events_custom (task_id, id);

-- The audit triggers of 0001_schema.sql, now writing the transaction counter too.
DROP TRIGGER steps_audit;
CREATE TRIGGER steps_audit AFTER UPDATE OF state ON steps
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE step_transitions SET most_recent = 0 WHERE step_id = NEW.id AND most_recent;
    INSERT INTO step_transitions (step_id, sort_key, from_state, to_state, metadata, most_recent,
                                  created_at, tx)
    VALUES (NEW.id,
            coalesce((SELECT max(sort_key) FROM step_transitions WHERE step_id = NEW.id), 0) + 1,
            OLD.state, NEW.state,
            json_patch('{}', json_object(
                'reason', nullif((SELECT reason FROM tasker_ctx WHERE id = 1), ''),
                'worker', NEW.worker,
                'attempt', NEW.claim_count,
                'error_kind', CASE WHEN NEW.state IN ('waiting_for_retry', 'error')
                                   THEN NEW.last_error_kind END)),
            1, NEW.updated_at, (SELECT tx_seq FROM tasker_ctx WHERE id = 1));
END;

DROP TRIGGER tasks_audit;
CREATE TRIGGER tasks_audit AFTER UPDATE OF state ON tasks
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE task_transitions SET most_recent = 0 WHERE task_id = NEW.id AND most_recent;
    INSERT INTO task_transitions (task_id, sort_key, from_state, to_state, metadata, most_recent,
                                  created_at, tx)
    VALUES (NEW.id,
            coalesce((SELECT max(sort_key) FROM task_transitions WHERE task_id = NEW.id), 0) + 1,
            OLD.state, NEW.state,
            json_patch('{}', json_object(
                'reason', nullif((SELECT reason FROM tasker_ctx WHERE id = 1), ''))),
            1, NEW.updated_at, (SELECT tx_seq FROM tasker_ctx WHERE id = 1));
END;
