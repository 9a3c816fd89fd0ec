-- The same bytes declared as another type are another document (a file sent
-- as `application/pdf` after being sent as `text/html` must not come back as
-- the HTML one): dedupe on the content type as well as the hash.
ALTER TABLE documents DROP CONSTRAINT documents_tenant_id_collection_content_hash_key;
ALTER TABLE documents ADD CONSTRAINT documents_tenant_collection_content_key
    UNIQUE (tenant_id, collection, content_hash, content_type);
