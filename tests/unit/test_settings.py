"""Settings never show a secret: a traceback or a log of the settings object leaks nothing."""

from __future__ import annotations

from payments.settings import Settings


def test_the_repr_of_the_settings_holds_no_secret() -> None:
    secrets = {
        "database_url": "postgresql://payments:pw-db-1@127.0.0.1:5432/payments",
        "database_read_url": "postgresql://payments:pw-db-2@127.0.0.1:5433/payments",
        "stripe_secret_key": "sk_test_secret-3",
        "stripe_webhook_secret": "whsec_secret-4",
        "api_keys": "acme:key-5",
        "operator_credentials": "ops:pw-6",
        "checkout_token_secret": "token-7",
    }
    shown = repr(Settings(**secrets)) + str(Settings(**secrets))
    for value in ("pw-db-1", "pw-db-2", "secret-3", "secret-4", "key-5", "pw-6", "token-7"):
        assert value not in shown
