"""The scan benchmark's command line: figures in JSON, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from hamfin.bench import main

REQUIRED = ("device", "B", "D", "L", "ref_fwd_s", "ref_fwdbwd_s", "chunked_fwd_s")
REQUIRED += ("chunked_fwdbwd_s", "speedup_fwd", "speedup_fwdbwd", "peak_mem_mb")


def test_bench_scan_writes_one_entry_per_shape_with_the_figures(tmp_path, capsys):
    path = tmp_path / "scan.json"
    argv = ["scan", "--json", str(path), "--lengths", "20", "--batch", "2", "--channels", "3"]
    argv += ["--chunk-size", "8", "--repeats", "1", "--ref-repeats", "1"]
    assert main(argv) == 0
    (entry,) = json.loads(path.read_text())
    assert all(key in entry for key in REQUIRED)
    assert (entry["B"], entry["D"], entry["L"], entry["device"]) == (2, 3, 20, "cpu")
    assert entry["speedup_fwdbwd"] == entry["ref_fwdbwd_s"] / entry["chunked_fwdbwd_s"]
    assert entry["peak_mem_mb"] >= 0
    assert "speedup" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["scan", "--bogus"], ["scan", "--lengths", "0"], ["scan", "--json", "MISSING/x.json"], []],
)
def test_bad_flags_give_one_line_and_exit_code_2(argv, tmp_path, capsys):
    argv = [a.replace("MISSING", str(tmp_path / "missing")) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()


def test_command_line_reports_an_unknown_subcommand_without_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "hamfin.bench", "nonsense"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hamfin.bench: error: expected 'scan' or 'train', got 'nonsense'"
    ]
