"""InstrumentSpec loading: every shipped spec validates; bad specs fail naming file and field."""

from pathlib import Path

import polars as pl
import pytest

from data_specs import (
    BARS,
    FORECASTS,
    QUOTES,
    SpecError,
    check_schema,
    conform,
    list_instruments,
    load_spec,
)
from data_specs.spec import SPEC_DIR

REQUIRED = {"EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "ES", "NQ", "6E", "CL", "GC", "ZN"}


def test_every_required_instrument_has_a_valid_spec():
    assert REQUIRED <= set(list_instruments())
    for instrument_id in REQUIRED:
        spec = load_spec(instrument_id)
        assert spec.instrument_id == instrument_id
        assert spec.price_increment > 0


def test_fx_specs_carry_pip_and_currencies_and_futures_carry_contracts():
    eurusd = load_spec("EURUSD")
    assert (eurusd.base_currency, eurusd.quote_currency, eurusd.pip_size) == ("EUR", "USD", 1e-4)
    assert eurusd.calendar.daily_roll == "17:00"
    assert eurusd.calendar.timezone == "America/New_York"
    assert eurusd.contract is None
    es = load_spec("ES")
    assert es.multiplier == 50 and es.contract is not None and es.contract.months == "HMUZ"
    assert es.calendar.daily_break == ("16:00", "17:00")
    assert load_spec("USDJPY").pip_size == 0.01


def test_unknown_instrument_names_the_known_ones():
    with pytest.raises(SpecError, match="unknown instrument 'XXXYYY'.*EURUSD"):
        load_spec("XXXYYY")


def _write_variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (SPEC_DIR / f"{name}.toml").read_text()
    assert old in text
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("multiplier = 50.0", "multiplier = -50.0", r"ES.toml: field 'multiplier' must be > 0"),
        ("multiplier = 50.0", 'multiplier = "fifty"', r"field 'multiplier' must be a number"),
        ("multiplier = 50.0\n", "", r"ES.toml: missing field 'multiplier'"),
        ('timezone = "America/Chicago"', 'timezone = "Mars/Olympus"', r"calendar.timezone"),
        ('months = "HMUZ"', 'months = "HXQ1"', r"contract.months"),
        ('crossed_quotes = "drop"', 'crossed_quotes = "ignore"', r"cleaning.crossed_quotes"),
        ('expiry_rule = "third_friday"', 'expiry_rule = "whenever"', r"contract.expiry_rule"),
        ("slippage_ticks = 0.5", "slippage_ticks = 0.5\nbogus = 1", r"unknown field 'costs.bogus'"),
    ],
)
def test_bad_field_fails_naming_file_and_field(tmp_path, old, new, message):
    path = _write_variant(tmp_path, "ES", old, new)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_spec_named_after_another_instrument_is_rejected(tmp_path):
    path = tmp_path / "GBPUSD.toml"
    path.write_text((SPEC_DIR / "EURUSD.toml").read_text())
    with pytest.raises(SpecError, match="instrument_id"):
        load_spec(path)


def test_malformed_toml_is_one_clear_error(tmp_path):
    path = tmp_path / "EURUSD.toml"
    path.write_text("instrument_id = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(path)


def test_periods_per_year_follows_the_calendar():
    assert load_spec("EURUSD").periods_per_year(3600) == pytest.approx(260 * 24)
    assert load_spec("ES").periods_per_year(60) == pytest.approx(252 * 23 * 60)


def test_conform_orders_casts_and_fills_and_check_schema_names_the_column():
    frame = pl.DataFrame(
        {"ask_price": [1.1], "bid_price": [1.0], "ts_event": [5], "instrument_id": ["EURUSD"]}
    )
    out = conform(frame, QUOTES)
    assert out.schema == QUOTES
    assert out["bid_size"].null_count() == 1
    check_schema(out, QUOTES, what="quotes")
    with pytest.raises(ValueError, match="missing column 'ts_close'"):
        check_schema(out, BARS, what="bars")
    with pytest.raises(ValueError, match="'ts_event' is String"):
        check_schema(out.with_columns(pl.col("ts_event").cast(pl.String)), QUOTES, what="q")
    assert "energy" in FORECASTS and FORECASTS["energy"] == pl.List(pl.Float64)
