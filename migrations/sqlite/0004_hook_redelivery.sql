-- Dead letters in id order, for listing and redelivering them without a read of the whole
-- outbox history: migrations/0013_hook_redelivery.sql on SQLite (whose
-- redeliver_hook_dead_letters is Rust here, host/store/src/sqlite/hooks.rs).
CREATE INDEX hook_outbox_dead ON hook_outbox (id) WHERE state = 'dead';
