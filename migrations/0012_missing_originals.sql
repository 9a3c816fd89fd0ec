-- A document whose original the object store no longer holds (a bucket
-- emptied or restored from an old backup, a lifecycle rule, an operator's
-- delete). The sweeper's hourly listing of `tenants/` finds them (and clears
-- the mark if the object comes back); reading the content or re-indexing
-- finds them at once. The chunks stay searchable; the mark is what reports it.
ALTER TABLE documents ADD COLUMN original_missing_since timestamptz;
CREATE INDEX documents_original_missing_idx ON documents (tenant_id) WHERE original_missing_since IS NOT NULL;

-- The listing walks originals in key order, which is (tenant, document) order;
-- each page is compared with the same range of rows.
CREATE INDEX documents_tenant_id_idx ON documents (tenant_id, id);
