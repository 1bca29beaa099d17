"""The training-throughput benchmark runs and prints its figures (not a timed test)."""

from __future__ import annotations

import json

from hamfin.bench_train import main


def test_bench_train_prints_bars_per_second_and_the_scaling_ratio(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["--windows", "16", "32", "--steps", "1", "--d-model", "8", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "time ratio 32/16 (linear scaling = 2)" in out
    entries = json.loads(path.read_text())
    assert {(e["model"], e["window"]) for e in entries} == {
        (m, w) for m in ("hmld", "lstm", "transformer") for w in (16, 32)
    }
    assert all(e["bars_per_s"] > 0 for e in entries)
