"""Settings never show a secret: a traceback or a log of the settings object leaks nothing."""

from __future__ import annotations

from payments.settings import Settings


def test_the_repr_of_the_settings_holds_no_secret() -> None:
    secrets = {
        "database_url": "postgresql://payments:pw-placeholder-1@127.0.0.1:5432/payments",
        "database_read_url": "postgresql://payments:pw-placeholder-2@127.0.0.1:5433/payments",
        "stripe_secret_key": "sk_test_placeholder3",
        "stripe_webhook_secret": "whsec_placeholder4",
        "api_keys": "acme:key-5",
        "operator_credentials": "ops:pw-6",
        "checkout_token_secret": "token-7",
    }
    shown = repr(Settings(**secrets)) + str(Settings(**secrets))
    secret_parts = ("placeholder-1", "placeholder-2", "placeholder3", "placeholder4")
    for value in (*secret_parts, "key-5", "pw-6", "token-7"):
        assert value not in shown
