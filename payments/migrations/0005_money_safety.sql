-- Why the inbox refused an event (e.g. the intent is not the payment's own).
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS reason text;

-- One Stripe rate budget for the whole deployment: every API process and every worker takes
-- its tokens from this row (a token bucket refilled by the clock of the primary).
CREATE TABLE IF NOT EXISTS rate_budgets (
    name       text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Nothing reads pending payments without an intent from the database any more (the worker's
-- table finds them), so their index goes.
DROP INDEX IF EXISTS payments_pending_no_intent_idx;
