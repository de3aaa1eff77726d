"""The framework-free core: statuses, money, the payment record, SQL and Stripe adapters."""
