-- Keyword search that works for questions (src/store/search.rs explains the ranking).
--
-- `context` is what a chunk sits under: its document's title and heading path
-- ("Title > Chapter > Section"). It is embedded and keyword-indexed with the
-- chunk, so a passage that never names its topic is still found by it; the
-- text returned to callers stays `content`. Chunks indexed before this
-- migration have an empty context until their document is re-indexed.
ALTER TABLE chunks ADD COLUMN context text NOT NULL DEFAULT '';

-- The context's words carry weight B, so the ranking can tell a heading match
-- from a mention in the body. Replacing the generated column rewrites the table
-- and its full-text index once. The index takes new rows straight into its
-- posting lists (fastupdate off): with a pending list, every search would scan
-- all recently indexed chunks one by one until the next vacuum.
ALTER TABLE chunks DROP COLUMN tsv;
ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', context), 'B') || to_tsvector('english', content)
) STORED;
CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv) WITH (fastupdate = off);

-- `content_hash` is now the SHA-256 of the embedded text (context and content):
-- embeddings are reused only for the same text under the same context.
COMMENT ON COLUMN chunks.content_hash IS 'SHA-256 of the embedded text (context, then content)';

-- A tsquery matching one lexeme exactly as to_tsvector produced it (no second
-- normalisation), optionally only where it carries one of `weights` ('B': in
-- the context). Quotes and backslashes are escaped as the tsquery syntax wants.
CREATE FUNCTION keyword_lexeme(lexeme text, weights text DEFAULT '') RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || ''''
        || CASE WHEN weights = '' THEN '' ELSE ':' || weights END)::tsquery;
