"""WHAT the data is: instrument specs (one TOML per instrument) and the table schemas."""

from data_specs.schemas import (
    BARS,
    FEATURES_KEY,
    FORECASTS,
    LINEAGE,
    QUARANTINE,
    QUOTES,
    TABLES,
    TRADES,
    check_schema,
    conform,
)
from data_specs.spec import (
    Calendar,
    Cleaning,
    Contract,
    Costs,
    InstrumentSpec,
    SpecError,
    list_instruments,
    load_spec,
)

__all__ = [
    "BARS",
    "FEATURES_KEY",
    "FORECASTS",
    "LINEAGE",
    "QUARANTINE",
    "QUOTES",
    "TABLES",
    "TRADES",
    "Calendar",
    "Cleaning",
    "Contract",
    "Costs",
    "InstrumentSpec",
    "SpecError",
    "check_schema",
    "conform",
    "list_instruments",
    "load_spec",
]
