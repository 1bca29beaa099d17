"""CLI: ingest prints its report path last, info summarizes, bad input is one line + exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main

FXCM = "quantconnect-lean/forex/fxcm/tick/eurusd"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_ingest_prints_the_report_path_last_then_bars_and_info(tmp_path, shared_data):
    store = tmp_path / "store"
    zips = [str(shared_data / FXCM / f"{day}_quote.zip") for day in ("20140504", "20140511")]
    done = cli("ingest", "--store", str(store), "--instrument", "EURUSD", "--format", "lean", *zips)
    assert done.returncode == 0, done.stderr
    report = Path(done.stdout.strip().splitlines()[-1])
    assert report.is_file() and report.parent == store / "_reports"
    summary = json.loads(report.read_text())
    assert [f["path"] for f in summary["files"]] == [str(Path(z).resolve()) for z in zips]
    assert summary["rows_in"] == summary["rows_stored"] + summary["rows_quarantined"]

    assert main(["bars", "--store", str(store), "--instrument", "EURUSD", "--every", "5m"]) == 0

    info = cli("info", "--store", str(store), "--instrument", "EURUSD")
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    quotes_line = next(line for line in lines if line.strip().startswith("quotes"))
    assert f"{summary['rows_stored']} rows" in " ".join(quotes_line.split())
    assert any("crossed_quote" in line for line in lines)
    assert any("bars of 300.0 s" in line for line in lines)


def test_info_json_reports_coverage_per_table(tmp_path, shared_data, capsys):
    store = tmp_path / "store"
    zip_path = str(shared_data / FXCM / "20140504_quote.zip")
    assert (
        main(
            [
                "ingest",
                "--store",
                str(store),
                "--instrument",
                "EURUSD",
                "--format",
                "lean",
                zip_path,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", "--store", str(store), "--instrument", "EURUSD", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    quotes, quarantine = info["tables"]["quotes"], info["tables"]["quarantine"]
    report = json.loads(Path(info["reports"][-1]).read_text())
    assert quotes["rows"] == report["rows_stored"]
    assert quarantine["by_reason"] == report["quarantined_by_reason"]
    assert quotes["first_ts_event"] == report["time_range"]["first_ts_event"]
    assert quotes["partitions"] == len(report["tables"]["quotes"]["partitions"])


BAD_INPUT = {
    "unknown instrument": (["info", "--instrument", "NOPE"], "unknown instrument 'NOPE'"),
    "missing file": (
        ["ingest", "--instrument", "EURUSD", "--format", "lean", "missing_quote.zip"],
        "missing_quote.zip: file not found",
    ),
    "bad flag": (["ingest", "--instrument", "EURUSD", "--format", "nope", "x.zip"], "--format"),
    "unknown flag": (["info", "--instrument", "EURUSD", "--colour"], "--colour"),
    "empty range": (
        ["bars", "--instrument", "EURUSD", "--start", "2014-05-02", "--end", "2014-05-01"],
        "empty time range",
    ),
    "store without the instrument": (
        ["bars", "--instrument", "GBPUSD", "--every", "1m"],
        "has no quotes for instrument GBPUSD",
    ),
    "bad duration": (["bars", "--instrument", "EURUSD", "--every", "1x"], "not a duration"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(case, tmp_path):
    args, expected = BAD_INPUT[case]
    store = tmp_path / "store"
    done = cli(*args, "--store", str(store), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not (store / "quotes").exists()


def test_a_corrupt_file_fails_ingest_with_exit_2_and_writes_nothing(tmp_path):
    folder = tmp_path / FXCM
    folder.mkdir(parents=True)
    bad = folder / "20140505_quote.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    done = cli(
        "ingest",
        "--store",
        str(tmp_path / "store"),
        "--instrument",
        "EURUSD",
        "--format",
        "lean",
        str(bad),
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "20140505_quote.zip" in done.stderr
    assert not any((tmp_path / "store").glob("*/instrument_id=*"))


def test_bench_writes_the_interface_keys_on_a_one_day_sample(tmp_path, shared_data):
    data = tmp_path / "data"
    (data / FXCM).mkdir(parents=True)
    (data / FXCM / "20140504_quote.zip").write_bytes(
        (shared_data / FXCM / "20140504_quote.zip").read_bytes()
    )
    out = tmp_path / "bench.json"
    done = cli("bench", "--json", str(out), "--data", str(data))
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    for key in (
        "ticks",
        "ticks_per_s",
        "io_floor_ticks_per_s",
        "pandas_ticks_per_s",
        "speedup_vs_pandas",
        "peak_rss_mb",
    ):
        assert figures[key] > 0, key
    jobs = figures["jobs"]
    assert figures["ticks"] == jobs["io_floor"]["ticks"] == jobs["pandas"]["ticks"]
    # the pandas job cleans by the same rules: same rows kept and quarantined
    assert jobs["pandas"]["rows_stored"] == jobs["pipeline"]["rows_stored"]
    assert jobs["pandas"]["bars"] == jobs["pipeline"]["bars"]


def test_csv_ingest_takes_a_column_map_in_either_form(tmp_path, shared_data, capsys):
    path = str(shared_data / "nautilus-trader/truefx/usdjpy-ticks.csv")
    store = str(tmp_path / "store")
    base = ["ingest", "--store", store, "--instrument", "USDJPY", "--format", "csv"]
    pairs = "ts_event=timestamp,bid_price=bid,ask_price=ask,has_header=true"
    assert main([*base, "--column-map", pairs, path]) == 0
    as_json = '{"ts_event": "timestamp", "bid_price": "bid", "ask_price": "ask"}'
    assert main([*base, "--column-map", as_json, path]) == 0
    reports = [
        json.loads(Path(line).read_text())
        for line in capsys.readouterr().out.split()
        if line.endswith(".json")
    ]
    assert [r["rows_new"] for r in reports] == [1000, 0]
    assert main([*base, "--column-map", "{bad", path]) == 2
    assert "--column-map: not valid JSON" in capsys.readouterr().err


def test_ingest_contract_flag_reaches_the_reader(tmp_path, shared_data):
    path = shared_data / "quantconnect-lean/future/cme/minute/es/20131007_trade.zip"
    store = tmp_path / "store"
    base = ["ingest", "--store", str(store), "--instrument", "ES", "--format", "lean-bars"]
    wrong = cli(*base, "--contract", "209912", str(path))
    assert wrong.returncode == 2 and "no member for contract 209912" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1 and not store.exists()
    june = cli(*base, "--contract", "201406", str(path))
    assert june.returncode == 0, june.stderr
    summary = json.loads(Path(june.stdout.strip().splitlines()[-1]).read_text())
    assert summary["rows_stored"] > 0
