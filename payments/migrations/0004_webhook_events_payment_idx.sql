-- The checkout page's timeline reads the webhook inbox rows of one payment.
CREATE INDEX IF NOT EXISTS webhook_events_payment_idx ON webhook_events (payment_id, received_at);
