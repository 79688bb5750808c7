-- Every trigger of the PostgreSQL schema as it stands after every migration in migrations/.
-- The trigger functions are in functions/; tests/sql_definitions.rs checks these match the
-- migrated database.

-- Audit: refuse an illegal state change and write the transition rows (skipped while
-- tasker.audited is on, when the hot functions write their own). Statement level with
-- transition tables, so a batch of N steps costs one trigger call.
CREATE OR REPLACE TRIGGER steps_audit AFTER UPDATE ON steps
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_steps_audit();

CREATE OR REPLACE TRIGGER tasks_audit AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_tasks_audit();

-- Hooks (docs/hooks.md): a template's `hooks:` become template_hooks rows, so
-- register_template needs no change.
CREATE OR REPLACE TRIGGER templates_hooks AFTER INSERT ON templates
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_template_hooks_insert();

-- The outbox is filled in the same transaction as the change it reports.
CREATE OR REPLACE TRIGGER attempts_hooks AFTER INSERT ON attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_hooks_from_attempts();

CREATE OR REPLACE TRIGGER task_transitions_hooks AFTER INSERT ON task_transitions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_hooks_from_task_transitions();

CREATE OR REPLACE TRIGGER tasks_hooks AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_hooks_from_tasks();

-- A row trigger with a WHEN clause: the hot path's many other transitions neither call it
-- nor pay for capturing a transition table.
CREATE OR REPLACE TRIGGER step_transitions_hooks AFTER INSERT ON step_transitions
    FOR EACH ROW WHEN (NEW.to_state = 'resolved_manually')
    EXECUTE FUNCTION tasker_hooks_from_step_transitions();

-- Concurrency keys (tasker_core::concurrency): a finishing task leaves its key's line or
-- gives up its slot; the slot is released, and the next task admitted, after the row is
-- written. Row triggers with WHEN clauses: tasks without a key never call them.
CREATE OR REPLACE TRIGGER tasks_concurrency_finish BEFORE UPDATE OF state ON tasks
    FOR EACH ROW WHEN (OLD.concurrency_state IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
                       AND NEW.state IN ('complete', 'error', 'cancelled'))
    EXECUTE FUNCTION tasker_concurrency_finish();

CREATE OR REPLACE TRIGGER tasks_concurrency_release AFTER UPDATE OF state ON tasks
    FOR EACH ROW WHEN (OLD.concurrency_state = 'holding' AND NEW.concurrency_state IS NULL)
    EXECUTE FUNCTION tasker_concurrency_release();
