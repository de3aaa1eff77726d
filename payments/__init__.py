"""The framework-free core: the domain (statuses, money, the payment, intents, events), the
ports, the use cases (service, reconcile), the adapters (PostgreSQL, Stripe) and the one
composition root (bootstrap)."""
