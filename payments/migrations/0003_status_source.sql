-- Who made the latest status change (api, webhook, reconciler, expiry, operator), on the row
-- itself, so the change stream carries it into the payment-status-update event's `source`.
ALTER TABLE payments ADD COLUMN status_source event_source;
