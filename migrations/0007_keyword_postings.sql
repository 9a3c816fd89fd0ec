-- Keyword search in rank order (src/store/search.rs explains the ranking).
--
-- A GIN index answers "which chunks contain this word" in no particular order,
-- so ranking a common word costs one row per chunk that has it. `chunk_terms`
-- is an inverted index kept in rank order instead: one posting per word of
-- each chunk, carrying the word's BM25 weight in that chunk (its impact, see
-- `keyword_impact`), indexed by (tenant, word, impact). A search reads the top
-- postings of each query word and stops, however many chunks match.
--
-- `keyword_frequencies` counts, per tenant, the chunks that contain each word
-- (its document frequency, for the inverse document frequency), and under the
-- empty word '' all of the tenant's chunks.
--
-- Both are derived from `chunks.tsv` by the triggers below, like an index: no
-- code path that adds or removes chunks (re-indexing, deleting a document, a
-- tenant's cascade) can leave them out of step.
CREATE TABLE chunk_terms (
    chunk_id  uuid NOT NULL,
    lexeme    text NOT NULL,
    tenant_id uuid NOT NULL,
    impact    real NOT NULL,
    PRIMARY KEY (chunk_id, lexeme)
);
CREATE INDEX chunk_terms_rank_idx ON chunk_terms (tenant_id, lexeme, impact DESC, chunk_id);

CREATE TABLE keyword_frequencies (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    lexeme    text NOT NULL,
    chunks    bigint NOT NULL,
    PRIMARY KEY (tenant_id, lexeme)
);

-- A word's weight in one chunk: BM25's term-frequency part, with the saturation
-- k1 = 1.2 and length normalisation b = 0.75. A word in the chunk's context
-- (title and headings, weight B) counts as two more occurrences. The average
-- chunk length is a constant, not the corpus's: chunks are cut to a target
-- size, so their average hardly moves, and a constant keeps a chunk's impacts
-- independent of every other row, so a write never rewrites old postings.
CREATE FUNCTION keyword_impact(weights text[], token_count int) RETURNS real
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (
    WITH tf AS (
        SELECT greatest(cardinality(array_positions(weights, 'D'))
                        + CASE WHEN 'B' = ANY(weights) THEN 2 ELSE 0 END, 1)::float8 AS n
    )
    SELECT (n * 2.2 / (n + 1.2 * (0.25 + 0.75 * greatest(token_count, 1) / 250.0)))::real FROM tf
);

-- A chunk's postings: each word of its text, with its impact there.
CREATE FUNCTION keyword_postings(tsv tsvector, token_count int) RETURNS TABLE (lexeme text, impact real)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    SELECT t.lexeme, keyword_impact(t.weights, token_count) FROM unnest(tsv) AS t;
END;

-- One function for both events: postings written or removed with their chunks,
-- then the frequencies moved by the same counts in one statement, rows taken in
-- one fixed order ('' first, then by byte order), so two transactions indexing
-- the same tenant queue on the '' row instead of deadlocking.
CREATE FUNCTION chunk_terms_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    direction bigint := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO chunk_terms (chunk_id, lexeme, tenant_id, impact)
        SELECT c.id, p.lexeme, c.tenant_id, p.impact
        FROM changed_chunks c CROSS JOIN LATERAL keyword_postings(c.tsv, c.token_count) AS p;
    ELSE
        DELETE FROM chunk_terms t USING changed_chunks c WHERE t.chunk_id = c.id;
    END IF;
    WITH counts AS (
        SELECT c.tenant_id, t.lexeme, count(*) AS chunks
        FROM changed_chunks c CROSS JOIN LATERAL unnest(c.tsv) AS t GROUP BY c.tenant_id, t.lexeme
        UNION ALL
        SELECT tenant_id, '', count(*) FROM changed_chunks GROUP BY tenant_id
    )
    -- A tenant being deleted (its row already gone) keeps no frequencies.
    INSERT INTO keyword_frequencies (tenant_id, lexeme, chunks)
    SELECT c.tenant_id, c.lexeme, direction * c.chunks FROM counts c
    WHERE EXISTS (SELECT 1 FROM tenants WHERE id = c.tenant_id)
    ORDER BY c.tenant_id, c.lexeme COLLATE "C"
    ON CONFLICT (tenant_id, lexeme) DO UPDATE SET chunks = keyword_frequencies.chunks + excluded.chunks;
    RETURN NULL;
END $$;

CREATE TRIGGER chunk_terms_add AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS changed_chunks FOR EACH STATEMENT EXECUTE FUNCTION chunk_terms_follow();
CREATE TRIGGER chunk_terms_remove AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS changed_chunks FOR EACH STATEMENT EXECUTE FUNCTION chunk_terms_follow();

-- Chunks are replaced, never edited: an edit of their text would leave the postings stale.
CREATE FUNCTION chunks_text_is_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chunks are replaced, not updated: delete and insert instead';
END $$;
CREATE TRIGGER chunks_text_is_immutable BEFORE UPDATE OF content, context ON chunks
    FOR EACH ROW EXECUTE FUNCTION chunks_text_is_immutable();

-- Chunks indexed before this migration. One statement through the trigger's own
-- code would hold every posting in memory at once; inserting directly and
-- counting afterwards does not.
INSERT INTO chunk_terms (chunk_id, lexeme, tenant_id, impact)
SELECT c.id, p.lexeme, c.tenant_id, p.impact FROM chunks c CROSS JOIN LATERAL keyword_postings(c.tsv, c.token_count) AS p;
INSERT INTO keyword_frequencies (tenant_id, lexeme, chunks)
SELECT tenant_id, lexeme, count(*) FROM chunk_terms GROUP BY tenant_id, lexeme
UNION ALL
SELECT tenant_id, '', count(*) FROM chunks GROUP BY tenant_id;
