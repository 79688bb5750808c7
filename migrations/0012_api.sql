-- What a server needs beside the hot path (host/store/src/listing.rs): API tokens, and an
-- index for listing tasks by state, newest first. Written by hand (no functions: the listing
-- and token operations are plain statements in host/store/src/pg_listing.rs).

-- API tokens: only the hash of a token's secret is kept. A name is never reused, not even
-- after its token was revoked.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name <> ''),
    -- Hex blake3 of the secret.
    hash         text NOT NULL UNIQUE,
    -- `resource:action` strings or `*`.
    permissions  text[] NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz
);

-- Listing tasks in some states, by descending id.
CREATE INDEX tasks_state ON tasks (state, id);
