-- The sweeper (src/worker/sweeper.rs) finds documents left `queued` or
-- `processing` with no job that will finish them (a failed enqueue, a task
-- killed after its database write) and sends their job again; `sweeps` counts
-- how often, so a document that never finishes ends `failed` instead of looping.
ALTER TABLE documents ADD COLUMN sweeps integer NOT NULL DEFAULT 0;
CREATE INDEX documents_unfinished_idx ON documents (updated_at) WHERE status IN ('queued', 'processing');

-- Fleet-wide pacing of periodic maintenance: a task runs a pass only if it can
-- take the pass's row, which frees itself at `expires_at`. Nothing is held
-- while the pass runs, so a task that dies mid-pass blocks nobody for longer
-- than one period.
CREATE TABLE maintenance_leases (
    name       text PRIMARY KEY,
    holder     uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
