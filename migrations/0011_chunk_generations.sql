-- A document's chunks are written as their embeddings arrive, in slices, each
-- under the indexing attempt's own generation; the document shows the chunks
-- of the generation it points at, and switching it is the one step that makes
-- a new set searchable. So a large document's rows and vector-index inserts
-- are spread over the time its embeddings take, instead of piling up in one
-- transaction after the last of them (src/worker/jobs/index.rs).
CREATE SEQUENCE chunk_generations;

-- 0 for everything indexed before: the rows and their documents agree.
ALTER TABLE documents ADD COLUMN chunk_generation bigint NOT NULL DEFAULT 0;
ALTER TABLE chunks ADD COLUMN generation bigint NOT NULL DEFAULT 0;

-- Two generations of one document hold the same ordinals while one replaces the other.
ALTER TABLE chunks ADD CONSTRAINT chunks_document_generation_ordinal_key UNIQUE (document_id, generation, ordinal);
ALTER TABLE chunks DROP CONSTRAINT chunks_document_id_ordinal_key;

-- Generations being written in slices, so what a task that died mid-document
-- left behind is found (and deleted by the sweeper) without scanning chunks.
-- An attempt is stopped at JOB_TIMEOUT_SECS, so an entry older than
-- SWEEP_STUCK_AFTER_SECS belongs to an attempt that will never publish it.
CREATE TABLE chunk_generations_open (
    generation  bigint PRIMARY KEY,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    opened_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chunk_generations_open_document_idx ON chunk_generations_open (document_id);
CREATE INDEX chunk_generations_open_opened_idx ON chunk_generations_open (opened_at);
