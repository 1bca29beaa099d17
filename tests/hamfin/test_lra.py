"""LRA ListOps (``hamfin.lra``): evaluator, generator, classifier, ``validate listops`` CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from hamfin.lra import (
    CLOSE,
    PAD,
    VOCAB,
    ListOpsClassifier,
    ListOpsConfig,
    ListOpsData,
    detokenize,
    evaluate,
    evaluate_listops,
    generate_listops,
    max_nesting,
    tokenize,
    train_listops,
    wilson_interval,
)
from hamfin.models.net import ModelConfig
from hamfin.validate import main

SMALL = ListOpsConfig(min_length=20, max_length=120)


def _argument_counts(ids: list[int]) -> list[int]:
    """Number of arguments of every operator in ``ids`` (an independent little parser)."""
    counts, stack = [], []
    for i in ids:
        if VOCAB[i].startswith("["):
            if stack:
                stack[-1] += 1
            stack.append(0)
        elif i == CLOSE:
            counts.append(stack.pop())
        elif stack:
            stack[-1] += 1
    return counts


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7", 7),
        ("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]", 5),
        ("[MIN 4 3 [MAX 2 9 ] 8 ]", 3),
        ("[SM 9 8 7 ]", 4),  # 24 mod 10
        ("[MED 1 2 ]", 1),  # even count: int(np.median) = floor of 1.5
        ("[MED 3 8 1 6 ]", 4),  # middle values 3 and 6: 4.5 -> 4
        ("[MED 0 9 ]", 4),
        ("[MED 9 9 0 0 5 ]", 5),
        ("[SM [MED 1 2 ] [MAX 0 [MIN 7 8 ] ] 5 ]", 3),  # (1 + 7 + 5) mod 10
        ("[MAX [MAX [MAX [MAX 1 2 ] 3 ] 4 ] 0 ]", 4),
    ],
)
def test_evaluator_on_hand_written_expressions(text, value):
    assert evaluate(text) == value
    assert evaluate(tokenize(text) + [PAD, PAD]) == value  # padding is ignored


def test_median_of_even_counts_is_the_truncated_numpy_median():
    rng = random.Random(0)
    for _ in range(300):
        args = [rng.randrange(10) for _ in range(rng.choice([2, 4, 6, 8, 10]))]
        text = "[MED " + " ".join(map(str, args)) + " ]"
        assert evaluate(text) == int(np.median(args))


@pytest.mark.parametrize("text", ["", "[MAX 1 2", "1 2", "]", "[MAX ]", "[MAX 1 ] 2", "[FOO 1 ]"])
def test_evaluator_rejects_malformed_expressions(text):
    with pytest.raises(ValueError):
        evaluate(text)


def test_vocabulary_and_round_trip():
    assert len(VOCAB) == 16 and VOCAB[PAD] == "<pad>" and VOCAB[CLOSE] == "]"
    text = "[SM 0 9 [MED 1 2 ] ]"
    ids = tokenize(text)
    assert ids == [14, 1, 10, 13, 2, 3, 15, 15]
    assert detokenize([*ids, PAD]) == text


def test_generator_respects_the_window_depth_and_arguments_and_labels_evaluate():
    config = ListOpsConfig(max_depth=4, max_args=5, min_length=30, max_length=90)
    sequences, labels = generate_listops(config, 200, seed=3)
    assert len(sequences) == len(labels) == 200
    assert all(30 < len(s) < 90 for s in sequences)
    assert max(max_nesting(s) for s in sequences) == config.max_depth - 1  # reached, not passed
    counts = [c for s in sequences for c in _argument_counts(s)]
    assert min(counts) == 2 and max(counts) == config.max_args
    assert [evaluate(s) for s in sequences] == labels
    assert len({tuple(s) for s in sequences}) == 200  # distinct
    assert len(set(labels)) == 10


def test_generator_at_lra_defaults_gives_long_deep_expressions():
    sequences, labels = generate_listops(ListOpsConfig(), 20, seed=0)
    assert all(500 < len(s) < 2000 for s in sequences)
    assert all(max_nesting(s) <= 9 for s in sequences)
    assert max(max_nesting(s) for s in sequences) >= 5
    assert [evaluate(s) for s in sequences] == labels


def test_generator_is_deterministic_under_a_seed():
    first = generate_listops(SMALL, 30, seed=7)
    assert generate_listops(SMALL, 30, seed=7) == first
    assert generate_listops(SMALL, 30, seed=8)[0] != first[0]


def test_generator_reports_an_exhausted_window():
    # only [SM a b ]: 100 distinct expressions
    tiny = ListOpsConfig(max_depth=2, max_args=2, min_length=1, max_length=5, operators=("SM",))
    assert len(generate_listops(tiny, 100, seed=0)[0]) == 100
    with pytest.raises(RuntimeError, match="distinct"):
        generate_listops(tiny, 101, seed=0)
    with pytest.raises(ValueError):
        ListOpsConfig(max_depth=2, max_args=3, min_length=500)  # longest tree has 5 tokens


@pytest.mark.parametrize("model", ["hmld", "lstm", "transformer"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_logits_do_not_depend_on_right_padding(model, pooling):
    torch.manual_seed(0)
    net = ListOpsClassifier(model, ModelConfig(d_model=16, d_state=16), pooling=pooling).eval()
    data = ListOpsData.from_lists(*generate_listops(SMALL, 4, seed=1))
    tokens, lengths, _ = data.batch(torch.arange(4))
    with torch.no_grad():
        together = net(tokens, lengths)  # (4, 10), padded to the longest
        alone = [net(tokens[i : i + 1, : lengths[i]], lengths[i : i + 1]) for i in range(4)]
    assert together.shape == (4, 10)
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_wilson_interval_brackets_the_proportion():
    low, high = wilson_interval(40, 100)
    assert 0.30 < low < 0.40 < high < 0.50
    assert wilson_interval(0, 50)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(50, 50)[1] == pytest.approx(1.0)
    assert wilson_interval(50, 50)[0] > 0.9


@pytest.mark.usefixtures("one_thread")
def test_hmld_learns_depth_one_min_max_far_above_majority():
    # one operator (MIN or MAX) over 2-4 digits: the answer needs the operator and all digits
    window = {"min_length": 3, "max_length": 7}
    config = ListOpsConfig(max_depth=2, max_args=4, operators=("MIN", "MAX"), **window)
    sequences, labels = generate_listops(config, 2500, seed=0)
    train = ListOpsData.from_lists(sequences[:2000], labels[:2000])
    test = ListOpsData.from_lists(sequences[2000:], labels[2000:])
    model_config = ModelConfig(d_model=32, n_layers=1, d_state=32)
    model, _ = train_listops("hmld", model_config, train, steps=300, batch=32, lr=1e-2, seed=0)
    score = evaluate_listops(model, test)
    assert score["majority"] < 0.3
    assert score["accuracy"] > 0.8
    assert score["ci95"][0] <= score["accuracy"] <= score["ci95"][1]


@pytest.mark.usefixtures("one_thread")
def test_listops_cli_prints_accuracy_baselines_and_writes_json(tmp_path, capsys):
    path = tmp_path / "listops.json"
    argv = ["listops", "--train", "40", "--test", "20", "--max-len", "60", "--steps", "3"]
    assert main([*argv, "--batch", "8", "--model", "lstm", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["task"] == "listops" and result["model"] == "lstm" and result["steps"] == 3
    assert result["generator"]["min_length"] == 15 and result["generator"]["max_length"] == 60
    assert result["examples"] == 20 and result["chance"] == pytest.approx(0.1)
    assert 0 < result["majority"] <= 1 and 0 <= result["accuracy"] <= 1
    out = capsys.readouterr().out
    assert "test accuracy" in out and "95% CI" in out and "majority class" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["listops", "--train", "0"],
        ["listops", "--max-len", "-5"],
        ["listops", "--model", "gru"],
        ["listops", "--pooling", "max"],
        ["listops", "--steps", "many"],
        ["listops", "--lr", "0"],
        ["listops", "--model", "transformer", "--d-model", "30"],
        ["listops", "--max-depth", "2", "--max-args", "3"],  # no tree reaches 500 tokens
        ["listops", "--max-len", "6", "--max-depth", "2", "--max-args", "2", "--train", "500"],
        ["listops", "--json", "/no/such/dir/x.json"],
    ],
)
def test_listops_bad_flags_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
