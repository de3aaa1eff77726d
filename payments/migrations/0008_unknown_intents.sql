-- A past-TTL payment whose intent Stripe answers 404 for (a definite "no such intent", never a
-- timeout or a 5xx) is expired once that answer held over enough attempts for long enough: the
-- current run of such answers is kept with the failed check (since when, how many in a row).
ALTER TABLE reconcile_retries
    ADD COLUMN IF NOT EXISTS unknown_since timestamptz,
    ADD COLUMN IF NOT EXISTS unknown_attempts integer NOT NULL DEFAULT 0;
