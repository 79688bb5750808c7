-- Concurrency keys (as PostgreSQL's 0022; tasker_core::concurrency). A template's spec (JSON),
-- each task's key, its limit and where it stands, and each key's count of slots held. A
-- waiting task's ready steps have ready_at 9223372036854775807 (i64::MAX, "once admitted"):
-- never claimed, and CHECK steps_ready_at still holds. Admission at creation, on retry and
-- by the sweeper is in sqlite/concurrency.rs; the release of a slot is these triggers, so
-- that every way a task finishes releases it (PostgreSQL: tasks_concurrency_finish and
-- tasks_concurrency_release). updated_at is the finishing call's now.
ALTER TABLE templates ADD COLUMN concurrency TEXT;
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
ALTER TABLE tasks ADD COLUMN concurrency_limit INTEGER CHECK (concurrency_limit >= 1);
ALTER TABLE tasks ADD COLUMN concurrency_state TEXT
    CHECK (concurrency_state IN ('waiting', 'holding'));
CREATE INDEX tasks_concurrency_waiting ON tasks (concurrency_key, id)
    WHERE concurrency_state = 'waiting';
CREATE INDEX tasks_concurrency_holding ON tasks (concurrency_key, id)
    WHERE concurrency_state = 'holding';
CREATE TABLE concurrency_keys (
    key      TEXT PRIMARY KEY,
    holding  INTEGER NOT NULL DEFAULT 0 CHECK (holding >= 0)
);

-- A finishing task leaves its key's line or gives up its slot; one slot freed admits at most
-- the line's head, if the key has room for its limit (sqlite/concurrency.rs admits any more).
CREATE TRIGGER tasks_concurrency_release AFTER UPDATE OF state ON tasks
WHEN OLD.concurrency_state IS NOT NULL AND OLD.state <> NEW.state
     AND NEW.state IN ('complete', 'error', 'cancelled')
BEGIN
    UPDATE tasks SET concurrency_state = NULL WHERE id = NEW.id;
    UPDATE concurrency_keys SET holding = holding - 1
    WHERE key = NEW.concurrency_key AND OLD.concurrency_state = 'holding';
    UPDATE tasks SET concurrency_state = 'holding', updated_at = NEW.updated_at
    WHERE OLD.concurrency_state = 'holding'
      AND id = (SELECT w.id FROM tasks w
                WHERE w.concurrency_key = NEW.concurrency_key AND w.concurrency_state = 'waiting'
                  AND (w.run_at IS NULL OR w.run_at <= NEW.updated_at)
                ORDER BY w.created_at - (w.priority - 1) * 30000000, w.id LIMIT 1)
      AND concurrency_limit > (SELECT k.holding FROM concurrency_keys k
                               WHERE k.key = NEW.concurrency_key);
END;

-- Admitted (waiting -> holding, with updated_at = now): it holds a slot, and its steps whose
-- parents are done are ready now.
CREATE TRIGGER tasks_concurrency_admit AFTER UPDATE OF concurrency_state ON tasks
WHEN OLD.concurrency_state = 'waiting' AND NEW.concurrency_state = 'holding'
BEGIN
    UPDATE concurrency_keys SET holding = holding + 1 WHERE key = NEW.concurrency_key;
    UPDATE steps SET ready_at = NEW.updated_at, updated_at = NEW.updated_at
    WHERE task_id = NEW.id AND ready_at = 9223372036854775807;
END;
