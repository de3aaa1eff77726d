"""Money is an integer number of minor units plus a lower-case ISO 4217 currency."""

from __future__ import annotations

from dataclasses import dataclass

from payments.domain.errors import InvalidRequest

# ISO 4217 currencies Stripe supports, lower-case. Zero-decimal ones carry no minor unit.
CURRENCIES: frozenset[str] = frozenset(
    [
        "aed",
        "afn",
        "all",
        "amd",
        "ang",
        "aoa",
        "ars",
        "aud",
        "awg",
        "azn",
        "bam",
        "bbd",
        "bdt",
        "bgn",
        "bhd",
        "bif",
        "bmd",
        "bnd",
        "bob",
        "brl",
        "bsd",
        "bwp",
        "byn",
        "bzd",
        "cad",
        "cdf",
        "chf",
        "clp",
        "cny",
        "cop",
        "crc",
        "cve",
        "czk",
        "djf",
        "dkk",
        "dop",
        "dzd",
        "egp",
        "etb",
        "eur",
        "fjd",
        "fkp",
        "gbp",
        "gel",
        "gip",
        "gmd",
        "gnf",
        "gtq",
        "gyd",
        "hkd",
        "hnl",
        "htg",
        "huf",
        "idr",
        "ils",
        "inr",
        "isk",
        "jmd",
        "jod",
        "jpy",
        "kes",
        "kgs",
        "khr",
        "kmf",
        "krw",
        "kwd",
        "kyd",
        "kzt",
        "lak",
        "lbp",
        "lkr",
        "lrd",
        "lsl",
        "mad",
        "mdl",
        "mga",
        "mkd",
        "mmk",
        "mnt",
        "mop",
        "mur",
        "mvr",
        "mwk",
        "mxn",
        "myr",
        "mzn",
        "nad",
        "ngn",
        "nio",
        "nok",
        "npr",
        "nzd",
        "omr",
        "pab",
        "pen",
        "pgk",
        "php",
        "pkr",
        "pln",
        "pyg",
        "qar",
        "ron",
        "rsd",
        "rub",
        "rwf",
        "sar",
        "sbd",
        "scr",
        "sek",
        "sgd",
        "shp",
        "sle",
        "sos",
        "srd",
        "std",
        "szl",
        "thb",
        "tjs",
        "tnd",
        "top",
        "try",
        "ttd",
        "twd",
        "tzs",
        "uah",
        "ugx",
        "usd",
        "uyu",
        "uzs",
        "vnd",
        "vuv",
        "wst",
        "xaf",
        "xcd",
        "xof",
        "xpf",
        "yer",
        "zar",
        "zmw",
    ]
)
ZERO_DECIMAL: frozenset[str] = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
# Stripe takes amounts of at most eight digits in the charge currency's minor unit.
MAX_AMOUNT_MINOR = 99_999_999
MIN_AMOUNT_MINOR = 1

# Three-decimal currencies: Stripe's payment partners need the last digit to be 0.
THREE_DECIMAL: frozenset[str] = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

# Stripe's minimum charge per currency, in minor units, from its "Minimum and maximum charge
# amounts" table (docs.stripe.com/currencies#minimum-and-maximum-charge-amounts, read
# 2026-11). Any other currency must convert to at least 0.50 USD at Stripe's rate of the day,
# which only Stripe can check: such a payment that is too small fails at intake with Stripe's
# own refusal at creation (402, the payment `failed`), never later.
MINIMUM_CHARGE: dict[str, int] = {
    "usd": 50,
    "aed": 200,
    "aud": 50,
    "bgn": 100,
    "brl": 50,
    "cad": 50,
    "chf": 50,
    "czk": 1500,
    "dkk": 250,
    "eur": 50,
    "gbp": 30,
    "hkd": 400,
    "huf": 17500,
    "inr": 50,
    "jpy": 50,
    "mxn": 1000,
    "myr": 200,
    "nok": 300,
    "nzd": 50,
    "pln": 200,
    "ron": 200,
    "sek": 300,
    "sgd": 50,
    "thb": 1000,
}

# Stripe's special cases. ISK is two-decimal in the API but whole krónur only (multiples of
# 100). HUF and TWD are two-decimal for charges too; only their payouts are whole units, so a
# charge in them needs no rule of its own.
WHOLE_UNITS_ONLY: frozenset[str] = frozenset(["isk"])


def decimals(currency: str) -> int:
    """Digits after the decimal point of the currency's minor unit, as Stripe counts them."""
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass; True is not an amount.
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise InvalidRequest(
                f"amount_minor must be an integer number of minor units, got {self.amount_minor!r}",
                field="amount_minor",
            )
        if not MIN_AMOUNT_MINOR <= self.amount_minor <= MAX_AMOUNT_MINOR:
            raise InvalidRequest(
                f"amount_minor must be between {MIN_AMOUNT_MINOR} and {MAX_AMOUNT_MINOR}, "
                f"got {self.amount_minor}",
                field="amount_minor",
            )
        if not isinstance(self.currency, str) or self.currency not in CURRENCIES:
            raise InvalidRequest(
                f"currency must be a lower-case ISO 4217 code Stripe supports, got "
                f"{self.currency!r}",
                field="currency",
            )

    def check_chargeable(self) -> Money:
        """Refuse, naming ``amount_minor``, an amount Stripe would refuse to charge: below the
        currency's minimum, a three-decimal amount whose last digit is not 0, a fraction of an
        ISK. Applied at intake, not to stored payments (the rules may change under them)."""
        minimum = MINIMUM_CHARGE.get(self.currency)
        if minimum is not None and self.amount_minor < minimum:
            raise InvalidRequest(
                f"amount_minor {self.amount_minor} is {self} but Stripe's minimum charge in "
                f"{self.currency.upper()} is {Money(minimum, self.currency)}",
                field="amount_minor",
            )
        if self.currency in THREE_DECIMAL and self.amount_minor % 10:
            raise InvalidRequest(
                f"amount_minor {self.amount_minor} is {self}: in {self.currency.upper()} Stripe "
                "needs the last of the three decimals to be 0 (round to the nearest ten)",
                field="amount_minor",
            )
        if self.currency in WHOLE_UNITS_ONLY and self.amount_minor % 100:
            raise InvalidRequest(
                f"amount_minor {self.amount_minor} is {self}: {self.currency.upper()} is charged "
                "in whole units only (amount_minor a multiple of 100)",
                field="amount_minor",
            )
        return self

    def __str__(self) -> str:
        places = decimals(self.currency)
        if places == 0:
            return f"{self.amount_minor} {self.currency.upper()}"
        units, fraction = divmod(self.amount_minor, 10**places)
        return f"{units}.{fraction:0{places}d} {self.currency.upper()}"
