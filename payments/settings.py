"""One frozen settings object per process, read from the environment (and `.env`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the system. Build it once in a factory and pass it down."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str = "postgresql://payments:payments@127.0.0.1:5432/payments"
    # libpq multi-host: the two streaming replicas, random pick, standby preferred.
    database_read_url: str = (
        "postgresql://payments:payments@127.0.0.1:5433,127.0.0.1:5434/payments"
        "?load_balance_hosts=random&target_session_attrs=prefer-standby"
    )
    db_pool_min: int = 1
    db_pool_max: int = 10
    db_connect_timeout_seconds: int = 5
    db_statement_timeout_ms: int = 5_000

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_connect_url: str = "http://127.0.0.1:8083"
    cdc_topic_prefix: str = "dbserver1"
    cdc_connector_name: str = "payments-postgres"
    status_topic: str = "payment-status-update"
    dlq_topic: str = "payment-cdc-dlq"

    stripe_secret_key: str = "sk_test_localstripe"
    # Empty means the real Stripe API; the local stack points at localstripe.
    stripe_api_base: str = "http://127.0.0.1:8420"
    stripe_webhook_secret: str = "whsec_localstripe"
    stripe_publishable_key: str = "pk_test_localstripe"
    # The Stripe base as the browser reaches it (Stripe.js of the stand-in); empty: the same as
    # stripe_api_base. Differs only where the API reaches Stripe by an internal name (compose).
    stripe_browser_api_base: str = ""
    stripe_webhook_tolerance_seconds: int = 300
    stripe_timeout_seconds: float = 10.0
    stripe_max_retries: int = 2
    # Stripe's limit is per account: the reconcilers share this budget.
    stripe_max_rps: float = 20.0

    reconcile_interval_seconds: float = 600.0
    # A pending payment with no Stripe event for this long is retrieved one by one.
    reconcile_stale_after_seconds: float = 3_600.0
    pending_ttl_seconds: float = 86_400.0

    worker_app_id: str = "payments-worker"
    worker_data_dir: str = ".stack/worker"
    worker_web_port: int = 6066
    worker_count: int = Field(default=1, ge=1)
    # The worker's web views, read by the API's /ops page (comma-separated for several).
    worker_url: str = "http://127.0.0.1:6066"

    # Comma-separated bearer keys; empty disables auth.
    api_keys: str = ""
    api_max_body_bytes: int = 64 * 1024
    log_level: str = "INFO"

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def worker_urls(self) -> list[str]:
        return [u.strip() for u in self.worker_url.split(",") if u.strip()]

    @property
    def cdc_payments_topic(self) -> str:
        return f"{self.cdc_topic_prefix}.public.payments"
