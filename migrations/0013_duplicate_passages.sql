-- Near-duplicate passages across documents (issue 34): folders as users bring
-- them hold the same text more than once (a book's chapters and its
-- all-in-one print page, mirrored copies, concatenated exports).

-- A sample of each chunk's word shingles (src/ingest/shingles.rs): 64-bit
-- hashes, those divisible by 16. NULL for chunks written before this
-- migration, until the sweeper computes them.
ALTER TABLE chunks ADD COLUMN shingles bigint[];
-- Where else a passage occurs: chunks holding any of a set of samples.
CREATE INDEX chunks_shingles_idx ON chunks USING gin (shingles);
CREATE INDEX chunks_shingles_missing_idx ON chunks (id) WHERE shingles IS NULL;

-- A document most of whose sampled passages also occur in smaller documents
-- of its collection is an aggregate (a print page, an export): ranked below
-- the pages it repeats. `aggregate_share` is that share (NULL: too little text
-- to tell, or not measured yet).
ALTER TABLE documents ADD COLUMN aggregate boolean NOT NULL DEFAULT false;
ALTER TABLE documents ADD COLUMN aggregate_share real;

-- Collections whose aggregate marks must be measured again: written in the
-- same transaction as the change (a document published or deleted), removed
-- by the measurement that saw that version. What a task that died left here
-- the sweeper measures.
CREATE TABLE aggregate_marks_stale (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    collection text NOT NULL,
    version    bigint NOT NULL DEFAULT 1,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, collection)
);
