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
# Stripe's largest amount is 8 digits in the charge currency's minor unit.
MAX_AMOUNT_MINOR = 99_999_999
MIN_AMOUNT_MINOR = 1


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

    def __str__(self) -> str:
        if self.currency in ZERO_DECIMAL:
            return f"{self.amount_minor} {self.currency.upper()}"
        units, cents = divmod(self.amount_minor, 100)
        return f"{units}.{cents:02d} {self.currency.upper()}"
