-- Who may create the Stripe PaymentIntent for a payment: the API request that inserted the
-- row claims it at insert time; the worker's finish_creation claims rows whose claim is old.
-- The claim is one guarded UPDATE, so the API and the worker never create intents concurrently
-- (the local Stripe stand-in ignores Idempotency-Key, so this is the one-intent guarantee).
ALTER TABLE payments ADD COLUMN creation_claimed_at timestamptz;
CREATE INDEX payments_pending_no_intent_idx ON payments (created_at)
    WHERE status = 'pending' AND provider_payment_id IS NULL;
