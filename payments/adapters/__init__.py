"""Adapters: PostgreSQL, Stripe, the shared Stripe rate budget."""
