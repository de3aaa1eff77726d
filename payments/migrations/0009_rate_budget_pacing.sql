-- The shared Stripe budget paces calls instead of holding a bucket of a second's worth of
-- tokens (which let about twice STRIPE_MAX_RPS through in one second): `next_at` is the
-- earliest time of the next call of any process, `background_next_at` that of the next
-- reconciliation call (which may take half the rate at most).
ALTER TABLE rate_budgets
    ADD COLUMN IF NOT EXISTS next_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ADD COLUMN IF NOT EXISTS background_next_at timestamptz NOT NULL DEFAULT clock_timestamp();
ALTER TABLE rate_budgets DROP COLUMN IF EXISTS tokens;
