-- Lets retrieval find, cheaply, the documents of a tenant whose vectors come
-- from another embedding model than the configured one (a re-index in progress):
-- those are searched with the query embedded by their own model.
CREATE INDEX documents_tenant_model_idx ON documents (tenant_id, embedding_model);
