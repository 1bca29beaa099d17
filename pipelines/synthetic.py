"""Built-in default data: a seeded synthetic tick generator for any instrument spec.

Everything made from it is synthetic and labelled so (``default_store`` writes a ``SYNTHETIC``
marker file in its store root). The model, per minute ``m`` of open market time:

1. **Calendar.** Only minutes inside the spec's trading week (``week_open`` to ``week_close``
   local, e.g. FX Sun 17:00 to Fri 17:00 New York) and outside its ``daily_break`` (CME 16:00 to
   17:00 Chicago) get ticks. Holidays are not modelled. The first minute after a closed period
   carries a gap return.
2. **Volatility** ``sigma_m = base * season_m * weekday_m * regime_m * exp(h_m)``:
   ``season`` is an intraday profile of Asia / London / New York session bumps, each on its own
   local clock (so DST moves them like the real sessions); ``weekday`` a weekly pattern (quiet
   Sunday evening and Friday afternoon); ``regime`` a 3-state Markov chain (calm / normal /
   turbulent, mean stays of hours to days); ``h`` a multi-factor log-normal stochastic volatility
   (AR(1) factors with half-lives from minutes to a week).
3. **Ticks.** The number of ticks in minute ``m`` is Poisson with intensity proportional to
   ``season * weekday * regime**0.5`` (more trading when markets are active), scaled to a mean
   of ``ticks_per_second``; tick times are uniform inside the minute. Each tick moves the
   log-mid by a Student-t draw scaled so the minute's variance is ``sigma_m**2``; rare jumps
   (a few a week) add a large move.
4. **Quotes.** The spread, in price increments, widens in thin markets and high volatility:
   ``typical_spread * (liquidity ** -0.5) * (vol ** 0.5) * lognormal noise``, at least one
   increment. Bid and ask lie on the spec's price grid (``price_increment``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.signal import lfilter

from data_specs.schemas import QUOTES
from data_specs.spec import InstrumentSpec, load_spec

NS = 1_000_000_000
MINUTE_NS = 60 * NS
HOUR_NS = 3600 * NS
DAY_NS = 24 * HOUR_NS
_WEEKDAYS = {"Mon": 0, "Tue": 1, "Wed": 2, "Thu": 3, "Fri": 4, "Sat": 5, "Sun": 6}


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic tick model (defaults resemble EUR/USD)."""

    annual_volatility: float = 0.07
    ticks_per_second: float = 1.0  # average over open market time
    start_price: float | None = None  # None: 1e5 increments (FX) or 2e4 increments (futures)
    regime_volatility: tuple[float, float, float] = (0.6, 1.0, 1.9)
    regime_mean_minutes: tuple[float, float, float] = (7200.0, 2880.0, 480.0)
    # log-volatility factors: half-lives of 5 minutes, an hour, a day, a week and a quarter
    sv_half_life_minutes: tuple[float, ...] = (5.0, 60.0, 1440.0, 10080.0, 131040.0)
    sv_std: tuple[float, ...] = (0.3, 0.2, 0.25, 0.3, 0.3)  # stationary std of each factor
    tick_t_dof: float = 4.0  # Student-t degrees of freedom of tick returns
    jumps_per_day: float = 0.5
    jump_scale_minutes: float = 6.0  # jump std in units of the minute's volatility
    gap_scale_minutes: float = 30.0  # weekend/break gap std in units of a minute's volatility
    spread_noise: float = 0.25  # lognormal std of the spread
    mean_size_lots: float = 5.0


# ---- calendar ---------------------------------------------------------------------------------


def _week_minute(text: str) -> int:
    day, hhmm = text.split()
    hours, minutes = (int(x) for x in hhmm.split(":"))
    return _WEEKDAYS[day] * 1440 + hours * 60 + minutes


def _clock(text: str) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    return hours * 60 + minutes


def _local_hours(grid: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (fractional local hour, local weekday Mon=0) of UTC minute starts (int ns).

    Time-zone offsets are looked up once per UTC hour (the zones used here change offset only
    on whole hours) and broadcast to the minutes, which keeps this cheap for years of minutes.
    """
    hours = np.unique(grid // HOUR_NS) * HOUR_NS
    utc = pl.Series(hours).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")
    wall = utc.dt.convert_time_zone(tz).dt.replace_time_zone(None).dt.epoch("ns").to_numpy()
    offset = (wall - hours)[np.searchsorted(hours, grid // HOUR_NS * HOUR_NS)]
    local = grid + offset
    hour = (local % DAY_NS) / HOUR_NS
    weekday = (local // DAY_NS + 3) % 7  # 1970-01-01 was a Thursday
    return hour, weekday


def _session_minutes(spec: InstrumentSpec, start_ns: int, end_ns: int):
    """Return open minute starts (ns) and their local clocks for the spec's calendar."""
    first = -(-start_ns // MINUTE_NS) * MINUTE_NS
    grid = np.arange(first, end_ns, MINUTE_NS, dtype=np.int64)
    cal = spec.calendar
    hour, weekday = _local_hours(grid, cal.timezone)
    week_min = weekday * 1440 + np.round(hour * 60).astype(np.int64)
    open_at, close_at = _week_minute(cal.week_open), _week_minute(cal.week_close)
    is_open = (week_min - open_at) % 10080 < (close_at - open_at) % 10080
    if cal.daily_break is not None:
        lo, hi = (_clock(t) for t in cal.daily_break)
        day_min = week_min % 1440
        is_open &= ~((day_min >= lo) & (day_min < hi))
    keep = np.flatnonzero(is_open)
    grid = grid[keep]
    clocks = {
        "local": (hour[keep], weekday[keep]),
        "tokyo": _local_hours(grid, "Asia/Tokyo")[0],
        "london": _local_hours(grid, "Europe/London")[0],
        "new_york": _local_hours(grid, "America/New_York")[0],
        "trading_day": ((week_min[keep] - open_at) % 10080) // 1440,  # 0 = first day of week
    }
    return grid, clocks


def _bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = (hour - centre + 12) % 24 - 12  # circular distance in hours
    return np.exp(-0.5 * (d / width) ** 2)


def _seasonality(spec: InstrumentSpec, clocks) -> tuple[np.ndarray, np.ndarray]:
    """Return (intraday volatility multiplier, weekly multiplier) per open minute, mean ~1."""
    tokyo, london, new_york = clocks["tokyo"], clocks["london"], clocks["new_york"]
    if spec.is_fx:
        weights = (0.35, 0.9, 1.2)  # Asia, London, New York session bumps
    else:
        weights = (0.15, 0.5, 2.0)  # CME futures: the US session dominates
    season = (
        0.35
        + weights[0] * _bump(tokyo, 9.5, 2.0)
        + weights[1] * _bump(london, 8.5, 2.0)
        + weights[2] * _bump(new_york, 9.5, 2.2)
        + 0.6 * weights[2] * _bump(new_york, 8.5, 0.35)  # US data releases at 08:30 NY
    )
    # Trading days: the first (Sunday evening) session is thin, Friday fades out.
    day = clocks["trading_day"]
    weekly = np.array([0.9, 1.0, 1.05, 1.05, 0.95, 0.9, 0.9])[np.minimum(day, 6)]
    sunday_evening = (clocks["local"][1] == 6) & (day == 0)
    weekly = np.where(sunday_evening, 0.6, weekly)
    return season / season.mean(), weekly


# ---- volatility ---------------------------------------------------------------------------------


def _regimes(rng: np.random.Generator, n: int, config: SyntheticConfig) -> np.ndarray:
    """Return a Markov-switching regime index per minute (geometric stays, random next state)."""
    means = np.asarray(config.regime_mean_minutes)
    states = np.empty(n, dtype=np.int64)
    pos, state = 0, int(rng.integers(3))
    while pos < n:
        stay = int(rng.geometric(1.0 / means[state]))
        states[pos : pos + stay] = state
        pos += stay
        state = int(rng.choice([s for s in range(3) if s != state]))
    return states


def _log_vol(rng: np.random.Generator, n: int, config: SyntheticConfig) -> np.ndarray:
    """Return a sum of Gaussian AR(1) log-volatility factors (mean shifted for unbiased vol)."""
    total = np.zeros(n)
    for half_life, std in zip(config.sv_half_life_minutes, config.sv_std, strict=True):
        phi = 0.5 ** (1.0 / half_life)
        shocks = rng.standard_normal(n) * std * np.sqrt(1 - phi**2)
        path = lfilter([1.0], [1.0, -phi], shocks, zi=[phi * std * rng.standard_normal()])[0]
        total += path - std**2  # E[exp(x - s^2)] = exp(-s^2/2): keeps volatility ~ unbiased
    return total


# ---- generator ----------------------------------------------------------------------------------


def _to_ns(value) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp()) * NS + value.microsecond * 1000


def _decimals(increment: float) -> int:
    for d in range(13):
        if abs(round(increment, d) - increment) < 1e-15:
            return d
    return 12


def generate_quotes(
    spec: InstrumentSpec,
    *,
    start,
    end,
    seed: int = 0,
    config: SyntheticConfig = SyntheticConfig(),
) -> pl.DataFrame:
    """Generate synthetic quote ticks for ``spec`` over ``[start, end)`` (UTC).

    Parameters
    ----------
    spec
        The instrument: calendar, price grid, typical spread.
    start, end
        ISO strings, dates, datetimes (naive = UTC) or int ns since the epoch.
    seed
        Seed of the random generator: equal arguments give equal output.
    config
        Model parameters.

    Returns
    -------
    pl.DataFrame
        QUOTES schema, sorted by ``ts_event``, prices on the spec's price grid, ``ask > bid``.
    """
    start_ns, end_ns = _to_ns(start), _to_ns(end)
    if end_ns <= start_ns:
        raise ValueError(f"end must be after start, got start={start!r} end={end!r}")
    rng = np.random.default_rng(seed)
    minutes, clocks = _session_minutes(spec, start_ns, end_ns)
    n_min = minutes.size
    if n_min == 0:
        return pl.DataFrame(schema=QUOTES)
    increment = spec.price_increment

    # 1. volatility per minute
    season, weekly = _seasonality(spec, clocks)
    regime = np.asarray(config.regime_volatility)[_regimes(rng, n_min, config)]
    year_minutes = spec.calendar.trading_days_per_year * spec.calendar.trading_hours_per_day * 60
    base = config.annual_volatility / np.sqrt(year_minutes)
    sigma = base * season * weekly * regime * np.exp(_log_vol(rng, n_min, config))

    # 2. tick counts per minute: more ticks when active
    activity = season * weekly * np.sqrt(regime)
    rate = config.ticks_per_second * 60 * activity / activity.mean()
    counts = rng.poisson(rate)
    counts[counts == 0] = rng.random(np.count_nonzero(counts == 0)) < 0.5  # keep some quiet ones
    n = int(counts.sum())
    owner = np.repeat(np.arange(n_min), counts)  # minute of each tick

    # 3. tick times: uniform within the minute, sorted
    offsets = np.sort(owner + rng.random(n))  # owner is non-decreasing: sort keeps ownership
    ts = minutes[owner] + ((offsets - owner) * MINUTE_NS).astype(np.int64)

    # 4. log-mid increments: Student-t ticks carrying the variance accrued since the previous
    # tick (a minute without ticks passes its variance on to the next tick), jumps, gaps
    busy = np.flatnonzero(counts > 0)  # minutes that have ticks
    first_tick = np.cumsum(counts)[busy] - counts[busy]
    accrued = np.diff(np.r_[0.0, np.cumsum(sigma**2)[busy]])  # variance since previous busy
    dof = config.tick_t_dof
    t_scale = np.sqrt((dof - 2) / dof)
    tick_std = np.zeros(n_min)
    tick_std[busy] = np.sqrt(accrued / counts[busy])
    step = rng.standard_t(dof, n) * t_scale * tick_std[owner]
    # events at a minute land on the first tick at or after it
    p_jump = config.jumps_per_day / (spec.calendar.trading_hours_per_day * 60)
    jump_at = np.flatnonzero(rng.random(n_min) < p_jump)
    gap_at = np.flatnonzero(np.diff(minutes) > MINUTE_NS) + 1  # first minute after a closure
    for at, scale in ((jump_at, config.jump_scale_minutes * sigma[jump_at]),
                      (gap_at, config.gap_scale_minutes * base)):  # fmt: skip
        slot = np.searchsorted(busy, at)
        ok = slot < busy.size
        np.add.at(step, first_tick[slot[ok]], (rng.standard_normal(at.size) * scale)[ok])
    step[0] = 0.0
    p0 = config.start_price or increment * (1e5 if spec.is_fx else 2e4)
    mid = p0 * np.exp(np.cumsum(step))

    # 5. spread in increments: wider in thin and volatile markets
    liquidity = activity / activity.mean()
    vol_ratio = sigma / (base * season * weekly)  # regime and SV part of volatility
    typical = spec.costs.typical_spread / increment
    noise = np.exp(config.spread_noise * rng.standard_normal(n))
    spread_raw = typical * 0.75 * (liquidity**-0.5 * vol_ratio**0.5)[owner] * noise
    spread = np.maximum(1, np.round(spread_raw)).astype(np.int64)
    bid_ticks = np.floor(mid / increment - spread / 2 + rng.random(n)).astype(np.int64)
    decimals = _decimals(increment)
    bid = np.round(bid_ticks * increment, decimals)
    ask = np.round((bid_ticks + spread) * increment, decimals)

    lot = spec.lot_size
    sizes = rng.geometric(1.0 / config.mean_size_lots, size=(2, n)).astype(np.float64) * lot
    frame = pl.DataFrame(
        {
            "ts_event": ts,
            "bid_price": bid,
            "ask_price": ask,
            "bid_size": sizes[0],
            "ask_size": sizes[1],
        }
    )
    instrument = pl.lit(spec.instrument_id, dtype=pl.String).alias("instrument_id")
    return frame.select(instrument, pl.all())


# ---- built-in default store ---------------------------------------------------------------------

DEFAULT_ROOT = Path("data") / "synthetic"
DEFAULT_START = "2024-01-01"
MARKER = "SYNTHETIC"


def default_store(
    root: str | Path | None = None,
    *,
    instrument_id: str = "EURUSD",
    days: int = 168,
    seed: int = 0,
    config: SyntheticConfig | None = None,
) -> Path:
    """Build (once) the built-in synthetic store for ``instrument_id`` and return its root.

    The store holds ``quotes`` and 1-minute ``bars`` for ``days`` calendar days from
    2024-01-01 (168 calendar days = 24 weeks, about 120 FX trading days), written through
    ``pipelines.store.Store`` under ``root`` (default ``data/synthetic``). A ``SYNTHETIC``
    marker file in the root says the data are generated; a per-instrument stamp records the
    arguments, so a second call with the same arguments returns at once and different
    arguments rebuild that instrument.
    """
    from pipelines.bars import time_bars
    from pipelines.store import Store

    root = Path(root) if root is not None else DEFAULT_ROOT
    config = config or _default_config(instrument_id)
    spec = load_spec(instrument_id)
    stamp = root / f".{instrument_id}.json"
    recipe = json.dumps(
        {
            "instrument_id": instrument_id,
            "start": DEFAULT_START,
            "days": days,
            "seed": seed,
            "config": asdict(config),
            "generator": "pipelines.synthetic.generate_quotes v1",
        },
        indent=1,
        sort_keys=True,
    )
    if stamp.is_file() and (root / MARKER).is_file() and stamp.read_text() == recipe:
        return root
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        "Everything in this store is SYNTHETIC data made by pipelines.synthetic.generate_quotes;"
        " it is not market data.\n"
    )
    stamp.unlink(missing_ok=True)
    store = Store(root)
    for table in ("quotes", "bars"):  # a rebuild replaces the instrument's synthetic data
        shutil.rmtree(store.table_dir(table, instrument_id), ignore_errors=True)
    start = dt.date.fromisoformat(DEFAULT_START)
    quotes = generate_quotes(
        spec, start=start, end=start + dt.timedelta(days=days), seed=seed, config=config
    )
    bars = time_bars(quotes.lazy(), every="1m", spec=spec).collect()
    with store.transaction() as tx:
        tx.write("quotes", quotes, instrument_id=instrument_id)
        tx.write("bars", bars, instrument_id=instrument_id)
    stamp.write_text(recipe)
    return root


def _default_config(instrument_id: str) -> SyntheticConfig:
    """The default store's model: EUR/USD-like, at 0.5 tick/s to keep the build fast."""
    spec = load_spec(instrument_id)
    volatility = 0.07 if spec.is_fx else 0.16
    return SyntheticConfig(annual_volatility=volatility, ticks_per_second=0.5)
