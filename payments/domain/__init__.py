"""The domain: statuses and their rules, money, the payment, the status-update event.

Stdlib only: no framework, no driver."""
