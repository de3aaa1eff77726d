-- Payments core schema. Applied once by `payments-migrate` (tracked in schema_migrations).

CREATE TYPE payment_status AS ENUM ('pending', 'succeeded', 'failed', 'canceled', 'expired');
CREATE TYPE event_source AS ENUM ('api', 'webhook', 'reconciler', 'expiry', 'operator');

CREATE TABLE payments (
    id                  uuid PRIMARY KEY,
    idempotency_key     text NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash        text NOT NULL,
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            char(3) NOT NULL CHECK (currency = lower(currency)),
    status              payment_status NOT NULL DEFAULT 'pending',
    provider_status     text,
    provider            text NOT NULL DEFAULT 'stripe',
    provider_payment_id text UNIQUE,
    client_secret       text,
    customer_email      text,
    description         text,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    failure_code        text,
    failure_message     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    version             integer NOT NULL DEFAULT 1
);
-- Keyset pagination and the status filter of GET /payments.
CREATE INDEX payments_status_created_idx ON payments (status, created_at, id);
CREATE INDEX payments_created_idx ON payments (created_at, id);

CREATE TABLE payment_events (
    id                bigserial PRIMARY KEY,
    payment_id        uuid NOT NULL REFERENCES payments (id),
    from_status       payment_status,
    to_status         payment_status NOT NULL,
    source            event_source NOT NULL,
    provider_event_id text,
    version           integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_events_payment_idx ON payment_events (payment_id, id);

CREATE TABLE webhook_events (
    event_id     text PRIMARY KEY,
    type         text NOT NULL,
    payment_id   uuid,
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    outcome      text
);

-- One row; Debezium's heartbeat.action.query bumps it so the slot advances when idle.
CREATE TABLE dbz_heartbeat (
    id      integer PRIMARY KEY CHECK (id = 1),
    beat_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO dbz_heartbeat (id) VALUES (1);

-- Durable cursors (e.g. the reconciler's Stripe events.list position).
CREATE TABLE reconcile_cursors (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- before-images for updates and deletes in the change stream.
ALTER TABLE payments REPLICA IDENTITY FULL;

CREATE PUBLICATION payments_pub FOR TABLE payments, dbz_heartbeat;
