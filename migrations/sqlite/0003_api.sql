-- What a server needs beside the hot path: migrations/0012_api.sql on SQLite (API tokens,
-- and the index for listing tasks by state). Representation as in 0001_schema.sql: instants
-- INTEGER µs; a token's permissions are a JSON array of strings.

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE CHECK (name <> ''),
    hash         TEXT NOT NULL UNIQUE,
    permissions  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER
);

CREATE INDEX tasks_state ON tasks (state, id);
