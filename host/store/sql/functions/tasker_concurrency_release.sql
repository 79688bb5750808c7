-- AFTER a task holding a slot finished: the slot is free, and the key's line moves on
-- (tasker_concurrency_admit). NEW.updated_at is the finishing call's now.
CREATE OR REPLACE FUNCTION tasker_concurrency_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE concurrency_keys k SET holding = k.holding - 1 WHERE k.key = NEW.concurrency_key;
    PERFORM tasker_concurrency_admit(NEW.concurrency_key, NEW.updated_at);
    RETURN NULL;
END
$$;
