-- Priorities and delayed starts (as PostgreSQL's 0020). A template's default priority, a
-- step's own (NULL: its task's), each task's and each step's in effect.
ALTER TABLE templates ADD COLUMN priority INTEGER CHECK (priority BETWEEN 1 AND 5);
ALTER TABLE template_steps ADD COLUMN priority INTEGER CHECK (priority BETWEEN 1 AND 5);
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5);
-- Not before this instant (NULL: at creation).
ALTER TABLE tasks ADD COLUMN run_at INTEGER;
ALTER TABLE steps ADD COLUMN priority INTEGER NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5);
-- The claim queue per priority (tasker_core::priority): each priority's ready steps in ready
-- order, merged by claim key.
DROP INDEX steps_claim_queue;
CREATE INDEX steps_claim_queue ON steps (priority, ready_at, id) WHERE ready_at IS NOT NULL;
