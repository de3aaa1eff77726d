-- Reconciliation checks that failed, and when each may be tried again. Kept in the database, not
-- in a worker's memory, so that a restart or a rebalance does not put payments that keep failing
-- (an intent Stripe does not know, one that cannot be canceled yet) back in front of the others.
-- A row goes when its check succeeds, or with its payment.
CREATE TABLE IF NOT EXISTS reconcile_retries (
    payment_id uuid PRIMARY KEY REFERENCES payments (id) ON DELETE CASCADE,
    attempts   integer NOT NULL CHECK (attempts > 0),
    next_at    timestamptz NOT NULL,
    reason     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
