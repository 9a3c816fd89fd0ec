-- stolid's initial schema.
--
-- Every tenant-owned table carries tenant_id, and every query filters by it:
-- isolation is enforced in SQL, not by convention in handlers.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE tenants (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each key is stored; the key itself is shown once at creation.
-- `prefix` (the first characters of the key) lets a person tell keys apart in listings.
CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix     text NOT NULL,
    key_hash   bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

CREATE TABLE documents (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    collection     text NOT NULL DEFAULT 'default',
    title          text NOT NULL,
    content_type   text NOT NULL,
    -- Derived from tenant and document id, never from a user-supplied file name.
    s3_key         text NOT NULL,
    -- SHA-256 of the original bytes: the same content uploaded twice to one
    -- tenant and collection is one document.
    content_hash   text NOT NULL,
    size_bytes     bigint NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'processing', 'indexed', 'failed')),
    error          text,
    chunk_count    integer NOT NULL DEFAULT 0,
    token_count    integer NOT NULL DEFAULT 0,
    -- The embedding model whose vectors searches use for this document.
    embedding_model text,
    summary        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    processing_started_at timestamptz,
    indexed_at     timestamptz,
    UNIQUE (tenant_id, collection, content_hash)
);
CREATE INDEX documents_tenant_created_idx ON documents (tenant_id, created_at DESC, id DESC);
CREATE INDEX documents_metadata_idx ON documents USING gin (metadata jsonb_path_ops);

CREATE TABLE chunks (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id   uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal       integer NOT NULL,
    content       text NOT NULL,
    -- SHA-256 of the chunk text: lets re-indexing reuse embeddings of unchanged chunks.
    content_hash  text NOT NULL,
    token_count   integer NOT NULL,
    heading_path  text[] NOT NULL DEFAULT '{}',
    start_offset  integer NOT NULL,
    end_offset    integer NOT NULL,
    tsv           tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_tenant_hash_idx ON chunks (tenant_id, content_hash);
CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv);

-- Embeddings live beside chunks, one row per (chunk, model), in an untyped
-- `vector` column. The embedding model and its dimension are configuration:
-- at start-up stolid creates, if missing, a partial HNSW index per model on the
-- expression `embedding::vector(<dim>)` (see src/store/embeddings.rs), so a new
-- model needs no hand-written migration, and old and new vectors coexist while
-- a re-index runs.
CREATE TABLE chunk_embeddings (
    chunk_id   uuid NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    model      text NOT NULL,
    embedding  vector NOT NULL,
    PRIMARY KEY (chunk_id, model)
);

CREATE TABLE conversations (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_tenant_idx ON conversations (tenant_id, updated_at DESC);

CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content         text NOT NULL,
    citations       jsonb NOT NULL DEFAULT '[]'::jsonb,
    input_tokens    integer NOT NULL DEFAULT 0,
    output_tokens   integer NOT NULL DEFAULT 0,
    cost_usd        double precision NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at);

-- One row per model call (chat or embedding), written off the request path.
-- No foreign keys to conversations: usage must survive a deleted conversation.
CREATE TABLE model_calls (
    id              uuid PRIMARY KEY,
    tenant_id       uuid REFERENCES tenants (id) ON DELETE CASCADE,
    request_id      text,
    conversation_id uuid,
    endpoint        text NOT NULL,
    provider        text NOT NULL,
    model           text NOT NULL,
    operation       text NOT NULL CHECK (operation IN ('chat', 'embed')),
    input_tokens    integer NOT NULL,
    output_tokens   integer NOT NULL,
    latency_ms      double precision NOT NULL,
    cost_usd        double precision NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('ok', 'rate_limited', 'error')),
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_calls_tenant_time_idx ON model_calls (tenant_id, created_at);
CREATE INDEX model_calls_conversation_idx ON model_calls (conversation_id) WHERE conversation_id IS NOT NULL;
