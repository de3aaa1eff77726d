-- Every payment belongs to a tenant: the merchant whose API key made it (API_KEYS holds
-- `tenant:key` pairs). Rows made before tenants existed belong to `default`, the tenant of a
-- bare key. The API always names the tenant; the default stays for rows written by hand (tests,
-- benchmarks, an operator's SQL), which are then `default`'s, as a bare key would make them.
-- A constant default: PostgreSQL fills existing rows without rewriting the table.
ALTER TABLE payments
    ADD COLUMN tenant_id text NOT NULL DEFAULT 'default'
    CONSTRAINT payments_tenant_id_check CHECK (length(tenant_id) BETWEEN 1 AND 100);

-- Idempotency keys are the tenant's own: the same key from two tenants makes two payments, and a
-- reused key can only ever answer (or name) the tenant's own payment.
ALTER TABLE payments
    ADD CONSTRAINT payments_tenant_idempotency_key_key UNIQUE (tenant_id, idempotency_key);
ALTER TABLE payments DROP CONSTRAINT payments_idempotency_key_key;

-- GET /payments lists one tenant's payments, by (created_at, id), with or without a status.
DROP INDEX IF EXISTS payments_created_idx;
CREATE INDEX payments_tenant_created_idx ON payments (tenant_id, created_at, id);
CREATE INDEX payments_tenant_status_created_idx ON payments (tenant_id, status, created_at, id);
