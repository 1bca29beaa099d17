"""Copy-task validation and impulse probe of the HML-D core (``hamfin.validate``)."""

from __future__ import annotations

import json

import pytest
import torch

from hamfin.validate import (
    IGNORE,
    CopyModel,
    CopyModelConfig,
    CopyTask,
    copy_batch,
    evaluate_copy,
    impulse_probe,
    main,
    train_copy,
)

SHORT = CopyTask(length=20, tokens=3, alphabet=4)


def _train_and_score(*, shuffle_labels: bool) -> float:
    model, _ = train_copy(
        SHORT,
        CopyModelConfig(),
        steps=300,
        batch=16,
        lr=1e-2,
        seed=0,
        shuffle_labels=shuffle_labels,
    )
    return evaluate_copy(model, SHORT, sequences=256, batch=128, seed=12345)


def test_copy_batch_puts_targets_after_the_delimiter_and_nowhere_else():
    task = CopyTask(length=11, tokens=4, alphabet=5)
    inputs, targets = copy_batch(task, 64, torch.Generator().manual_seed(0))
    K, L, T = task.tokens, task.length, task.seq_len
    assert inputs.shape == targets.shape == (64, T)
    assert (inputs == task.delimiter).sum(dim=1).eq(1).all()
    assert (inputs[:, K + L] == task.delimiter).all()
    assert (targets[:, -K:] == inputs[:, :K]).all()  # the copy, in order
    assert (targets[:, :-K] == IGNORE).all()  # no loss before the delimiter
    assert (inputs[:, K : K + L] == task.blank).all()
    assert (inputs[:, -K:] == task.blank).all()  # the answers are never in the input there
    assert ((inputs[:, :K] >= 0) & (inputs[:, :K] < task.alphabet)).all()
    assert len(torch.unique(inputs[:, :K])) == task.alphabet  # all symbols drawn


def test_hmld_learns_short_copy_task_well_above_chance(one_thread):
    assert _train_and_score(shuffle_labels=False) > 0.9  # chance 0.25


def test_copy_task_with_shuffled_labels_stays_near_chance(one_thread):
    # the same training with labels permuted across the batch: nothing to learn, so the
    # held-out accuracy (true labels) must stay near 1/A = 0.25; shows the test above can fail
    assert _train_and_score(shuffle_labels=True) < 0.4


@pytest.mark.parametrize("model", ["hmld", "lstm"])
def test_streamed_pieces_with_carried_state_match_the_whole_sequence(model):
    torch.manual_seed(0)
    task = CopyTask(length=50, tokens=3, alphabet=4)
    net = CopyModel(task, CopyModelConfig(model=model, d_model=16)).eval()
    inputs, _ = copy_batch(task, 2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, _ = net(inputs)
        states, pieces = None, []
        for lo in range(0, task.seq_len, 13):  # 13 does not divide T = 57
            out, states = net(inputs[:, lo : lo + 13], states)
            pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-4, atol=1e-5)
    whole_acc = evaluate_copy(net, task, sequences=8, batch=4, seed=3)
    assert evaluate_copy(net, task, sequences=8, batch=4, seed=3, streaming=13) == whole_acc


def test_probe_at_100k_conservative_keeps_the_impulse_dissipative_decays():
    result = impulse_probe(100_000, d_model=32)
    cons, diss = result["conservative"], result["dissipative"]
    assert abs(cons["energy_ratio"] - 1) < 1e-8
    assert cons["max_channel_energy_drift"] < 1e-8
    assert diss["energy_ratio"] < 1e-3
    assert diss["channels_energy_below_half"] == diss["channels"]
    assert diss["oscillatory_effective_over_nominal_max_error"] < 1e-6
    assert 0.95 < diss["log_decay_measured_over_predicted_min"]
    assert diss["log_decay_measured_over_predicted_max"] < 1.05


def test_copy_cli_writes_json_with_the_result(tmp_path, capsys, one_thread):
    path = tmp_path / "copy.json"
    argv = ["copy", "--length", "5", "--tokens", "2", "--alphabet", "3", "--steps", "4"]
    assert main([*argv, "--eval-sequences", "8", "--streaming", "4", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["task"] == "copy" and result["model"] == "hmld" and result["steps"] == 4
    assert result["chance"] == pytest.approx(1 / 3)
    assert 0 <= result["accuracy"] <= 1 and result["device"] == "cpu"
    assert "held-out token accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["copy"],
        ["copy", "--length", "-3"],
        ["copy", "--length", "10", "--alphabet", "1"],
        ["copy", "--length", "10", "--model", "gru"],
        ["copy", "--length", "10", "--mode", "chaotic"],
        ["copy", "--length", "10", "--steps", "many"],
        ["copy", "--length", "10", "--lr", "0"],
        ["copy", "--length", "10", "--json", "/no/such/dir/x.json"],
        ["probe", "--length", "0"],
        ["bogus"],
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
