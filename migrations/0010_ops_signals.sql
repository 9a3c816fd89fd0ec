-- What `GET /v1/ops/signals` and `stolid signals` read (src/signals.rs): the
-- three signals the architecture watches before it adds complexity.

-- How long an embedding waited for the fleet's limiter before it was sent
-- (queued behind the cap, paced, paused after a 429); 0 for chat calls.
ALTER TABLE model_calls ADD COLUMN wait_ms double precision NOT NULL DEFAULT 0;
CREATE INDEX model_calls_created_idx ON model_calls (created_at);

-- One row per chat, suggest and agent request: where its time went. Written
-- off the request path with the model calls. `vector_ms` and `keyword_ms` are
-- the two retrieval halves (they run side by side, so the shares may add up to
-- more than the whole); `model_ms` is the time spent waiting for model calls.
CREATE TABLE request_timings (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    request_id      text,
    endpoint        text NOT NULL,
    conversation_id uuid,
    -- The first message of a conversation (or a turn with no history).
    first_message   boolean NOT NULL,
    total_ms        double precision NOT NULL,
    vector_ms       double precision NOT NULL,
    keyword_ms      double precision NOT NULL,
    model_ms        double precision NOT NULL,
    created_at      timestamptz NOT NULL
);
CREATE INDEX request_timings_tenant_idx ON request_timings (tenant_id, created_at);
CREATE INDEX request_timings_created_idx ON request_timings (created_at);
