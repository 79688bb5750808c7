-- What each attempt's handler said, with its row: migrations/0016_attempt_logs.sql's column
-- (JSON text here; NULL when the attempt said nothing).
ALTER TABLE attempts ADD COLUMN logs TEXT;
