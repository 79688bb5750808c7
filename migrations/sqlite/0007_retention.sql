-- Retention (docs/store.md, "Retention"): the pruner's scans, as PostgreSQL's 0018.
-- Finished tasks per state, oldest first.
CREATE INDEX tasks_retention ON tasks (state, finished_at) WHERE finished_at IS NOT NULL;
-- Delivered outbox rows, oldest first.
CREATE INDEX hook_outbox_delivered ON hook_outbox (finished_at) WHERE state = 'delivered';
