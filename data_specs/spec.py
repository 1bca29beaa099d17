"""InstrumentSpec: what an instrument is, loaded from ``data_specs/<instrument_id>.toml``.

Instrument facts live only in these TOML files. ``load_spec("EURUSD")`` returns a frozen,
validated ``InstrumentSpec``; a wrong or missing field raises ``SpecError`` with one line naming
the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SPEC_DIR = Path(__file__).resolve().parent

AssetClass = Literal["fx", "future"]
QuotePolicy = Literal["drop", "keep", "flag"]
ExpiryRule = Literal[
    "third_friday",
    "two_business_days_before_third_wednesday",
    "three_business_days_before_25th_of_prior_month",
    "third_last_business_day",
    "seventh_business_day_before_last_business_day",
]
MONTH_CODES = "FGHJKMNQUVXZ"  # January .. December
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_WEEK_TIME = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([01]\d|2[0-3]):[0-5]\d$")


class SpecError(ValueError):
    """A spec file is missing, malformed, or holds an invalid field."""


@dataclass(frozen=True)
class Calendar:
    """Trading calendar in the instrument's own time zone."""

    timezone: str  # IANA name, e.g. "America/New_York"
    week_open: str  # "Sun 17:00", local
    week_close: str  # "Fri 17:00", local
    daily_roll: str  # "17:00": local time at which the trading day changes
    daily_break: tuple[str, str] | None  # ("16:00", "17:00") local maintenance break, or None
    trading_days_per_year: float  # for annualization
    trading_hours_per_day: float


@dataclass(frozen=True)
class Costs:
    """Cost model. Half-spread is taken from quotes where available, else ``typical_spread``."""

    typical_spread: float  # price units, used when the data has no quotes
    taker_fee: float  # fraction of notional per side (FX ECN commission), 0 for futures
    commission_per_contract: float  # account currency per contract per side (futures), 0 for FX
    slippage_ticks: float  # extra adverse move per side, in price increments
    rollover_long_bps_per_day: float = 0.0  # FX carry on a long position, bps of notional/day
    rollover_short_bps_per_day: float = 0.0


@dataclass(frozen=True)
class Cleaning:
    """Tick-cleaning policy."""

    crossed_quotes: QuotePolicy  # bid > ask
    locked_quotes: QuotePolicy  # bid == ask
    spike_window: int  # ticks in the robust rolling median
    spike_threshold_increments: float  # |mid - median| above this many price increments...
    spike_mad_multiple: float  # ...and above this many rolling MADs is a spike
    max_spread_increments: float  # wider spreads are rejected


@dataclass(frozen=True)
class Contract:
    """Futures contract cycle, expiry and roll."""

    months: str  # month codes that trade, e.g. "HMUZ"
    expiry_rule: ExpiryRule
    roll_days_before_expiry: int  # calendar days before expiry to roll to the next contract
    root: str  # exchange symbol root, e.g. "ES"


@dataclass(frozen=True)
class InstrumentSpec:
    """Everything hamfin knows about one instrument."""

    instrument_id: str
    asset_class: AssetClass
    description: str
    venue: str
    price_increment: float
    multiplier: float  # PnL per unit price move per unit of size (FX: 1 per base unit)
    currency: str  # currency PnL is made in (FX: the quote currency)
    lot_size: float  # units per standard lot (FX: 100_000 base units; futures: 1 contract)
    calendar: Calendar
    costs: Costs
    cleaning: Cleaning
    base_currency: str | None = None  # FX only
    quote_currency: str | None = None  # FX only
    pip_size: float | None = None  # FX only
    contract: Contract | None = None  # futures only

    @property
    def is_fx(self) -> bool:
        return self.asset_class == "fx"

    @property
    def is_future(self) -> bool:
        return self.asset_class == "future"

    def periods_per_year(self, bar_seconds: float) -> float:
        """Return how many bars of ``bar_seconds`` fit in a trading year."""
        seconds = self.calendar.trading_days_per_year * self.calendar.trading_hours_per_day * 3600
        return seconds / bar_seconds

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain data (for run folders)."""
        from dataclasses import asdict

        return asdict(self)


def list_instruments() -> list[str]:
    """Return the instrument ids that have a spec file, sorted."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.toml"))


def load_spec(instrument: str | Path) -> InstrumentSpec:
    """Load and validate a spec by instrument id (``"EURUSD"``) or by TOML path.

    Raises
    ------
    SpecError
        One line naming the file and the field that is wrong, or the unknown instrument.
    """
    path = Path(instrument)
    if path.suffix != ".toml":
        path = SPEC_DIR / f"{instrument}.toml"
        if not path.is_file():
            known = ", ".join(list_instruments())
            message = f"unknown instrument '{instrument}' (known: {known})"
            raise SpecError(message)
    if not path.is_file():
        message = f"{path}: spec file not found"
        raise SpecError(message)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        message = f"{path}: not valid TOML ({err})"
        raise SpecError(message) from err
    return _build(raw, path)


def _build(raw: dict[str, Any], path: Path) -> InstrumentSpec:
    where = path.name
    sections = {"calendar": Calendar, "costs": Costs, "cleaning": Cleaning, "contract": Contract}
    values: dict[str, Any] = {}
    for f in fields(InstrumentSpec):
        if f.name in sections:
            table = raw.get(f.name)
            if table is None:
                if f.name == "contract":
                    values[f.name] = None
                    continue
                raise SpecError(f"{where}: missing table [{f.name}]")
            values[f.name] = _section(sections[f.name], table, where, f.name)
        else:
            values[f.name] = _field(InstrumentSpec, f, raw, where, f.name)
    extra = sorted(set(raw) - {f.name for f in fields(InstrumentSpec)})
    if extra:
        raise SpecError(f"{where}: unknown field '{extra[0]}'")
    spec = InstrumentSpec(**values)
    _validate(spec, where, path)
    return spec


def _section(cls: type, table: Any, where: str, name: str) -> Any:
    if not isinstance(table, dict):
        raise SpecError(f"{where}: [{name}] must be a table")
    extra = sorted(set(table) - {f.name for f in fields(cls)})
    if extra:
        raise SpecError(f"{where}: unknown field '{name}.{extra[0]}'")
    return cls(**{f.name: _field(cls, f, table, where, f"{name}.{f.name}") for f in fields(cls)})


def _field(cls: type, f: Any, table: dict[str, Any], where: str, label: str) -> Any:
    from dataclasses import MISSING

    if f.name not in table:
        if f.default is not MISSING:
            return f.default
        raise SpecError(f"{where}: missing field '{label}'")
    value = table[f.name]
    kind = f.type if isinstance(f.type, str) else str(f.type)
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{where}: field '{label}' must be a number, got {value!r}")
        return float(value)
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: field '{label}' must be an integer, got {value!r}")
        return value
    if kind.startswith("tuple"):
        if value == [] or value is None:
            return None
        if not (isinstance(value, list) and len(value) == 2):
            raise SpecError(f'{where}: field \'{label}\' must be ["HH:MM", "HH:MM"] or []')
        return tuple(value)
    literal = {
        "AssetClass": AssetClass,
        "QuotePolicy": QuotePolicy,
        "ExpiryRule": ExpiryRule,
    }.get(kind)
    if literal is not None:
        allowed = get_args(literal)
        if value not in allowed:
            raise SpecError(
                f"{where}: field '{label}' must be one of {list(allowed)}, got {value!r}"
            )
        return value
    if not isinstance(value, str):
        raise SpecError(f"{where}: field '{label}' must be a string, got {value!r}")
    return value


def _validate(spec: InstrumentSpec, where: str, path: Path) -> None:
    def fail(label: str, why: str) -> None:
        raise SpecError(f"{where}: field '{label}' {why}")

    if spec.instrument_id != path.stem:
        fail("instrument_id", f"is {spec.instrument_id!r} but the file is named {path.stem!r}")
    for label in ("price_increment", "multiplier", "lot_size"):
        if not getattr(spec, label) > 0:
            fail(label, "must be > 0")
    cal = spec.calendar
    try:
        ZoneInfo(cal.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        fail("calendar.timezone", f"is not an IANA time zone: {cal.timezone!r}")
    for label in ("week_open", "week_close"):
        if not _WEEK_TIME.match(getattr(cal, label)):
            fail(f"calendar.{label}", "must look like 'Sun 17:00'")
    if not _TIME.match(cal.daily_roll):
        fail("calendar.daily_roll", "must look like '17:00'")
    if cal.daily_break is not None and not all(_TIME.match(t) for t in cal.daily_break):
        fail("calendar.daily_break", "must be two 'HH:MM' times")
    if not 0 < cal.trading_days_per_year <= 366:
        fail("calendar.trading_days_per_year", "must be in (0, 366]")
    if not 0 < cal.trading_hours_per_day <= 24:
        fail("calendar.trading_hours_per_day", "must be in (0, 24]")
    costs = spec.costs
    for label in ("typical_spread", "taker_fee", "commission_per_contract", "slippage_ticks"):
        if getattr(costs, label) < 0:
            fail(f"costs.{label}", "must be >= 0")
    clean = spec.cleaning
    if clean.spike_window < 3:
        fail("cleaning.spike_window", "must be >= 3")
    for label in ("spike_threshold_increments", "spike_mad_multiple", "max_spread_increments"):
        if not getattr(clean, label) > 0:
            fail(f"cleaning.{label}", "must be > 0")
    if spec.is_fx:
        for label in ("base_currency", "quote_currency", "pip_size"):
            if getattr(spec, label) is None:
                fail(label, "is required for asset_class 'fx'")
        if spec.pip_size <= 0:
            fail("pip_size", "must be > 0")
        if spec.currency != spec.quote_currency:
            fail("currency", f"must equal quote_currency {spec.quote_currency!r} for FX")
        if spec.contract is not None:
            fail("contract", "is only for futures")
    else:
        if spec.contract is None:
            raise SpecError(f"{where}: missing table [contract] (required for futures)")
        months = spec.contract.months
        if not months or any(c not in MONTH_CODES for c in months):
            fail("contract.months", f"must be month codes from {MONTH_CODES!r}")
        if spec.contract.roll_days_before_expiry < 0:
            fail("contract.roll_days_before_expiry", "must be >= 0")
