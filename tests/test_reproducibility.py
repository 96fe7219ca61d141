"""What ``--seed`` reproduces (on one machine, the same seed gives bit-identical weights and masks),
and Table 1 over seeds (mean ± std).

Seeded: the initializers, the data order of every epoch and the stochastic quantizer's draws
(``keras.utils.set_random_seed`` at the start of ``pipeline.train``). Across machines the float
sums themselves may differ (oneDNN kernels, thread counts); see bench/determinism.py.
"""
import dataclasses
import json
import shutil
import statistics

import numpy as np
import pytest

from conftest import TINY_RUN
from iprune_tf.workflow import recipes
from iprune_tf.workflow import pipeline
from iprune_tf.workflow import report

PHASE_MODELS = ("dense_fp", "dense_binary", "pruned")


def _weights(run):
    """``{phase: [arrays]}`` of every saved phase model, masks and BN statistics included."""
    return {phase: run.load_model(phase).get_weights() for phase in PHASE_MODELS}


def _identical(a, b):
    return all(len(a[p]) == len(b[p]) and all(np.array_equal(x, y) for x, y in zip(a[p], b[p])) for p in a)


def _masks(run):
    """The pruned model's mask variables (one per pruned layer)."""
    model = run.load_model("pruned")
    return [w.numpy() for w in model.weights if "mask" in w.name]


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, tiny_mnist_npz):
    """Runs with seeds 0, 0 and 1 of the tiny MNIST-preset pipeline (2 steps per epoch).

    The stochastic flavour: its quantizer draws random numbers at every step, on top of the
    initializers and the data order that every flavour seeds.
    """
    config = recipes.RunConfig(data=tiny_mnist_npz, flavour="binaryconnect_stoch", **dict(TINY_RUN, limit_train=200))
    root = tmp_path_factory.mktemp("seeds")
    return [pipeline.train(root / f"run{i}", dataclasses.replace(config, seed=seed), verbose=0)
            for i, seed in enumerate((0, 0, 1))]


def test_same_seed_gives_identical_weights_and_masks(three_runs):
    first, again, _ = three_runs
    assert _identical(_weights(first), _weights(again))
    masks = _masks(first)
    assert len(masks) == 2 and all(np.array_equal(m, n) for m, n in zip(masks, _masks(again)))
    assert [first.phases[p]["test_accuracy"] for p in PHASE_MODELS] == [again.phases[p]["test_accuracy"] for p in PHASE_MODELS]


def test_another_seed_gives_different_weights_and_masks(three_runs):
    first, _, other = three_runs
    a, b = _weights(first), _weights(other)
    for phase in PHASE_MODELS:
        assert not _identical({phase: a[phase]}, {phase: b[phase]}), phase
    assert not all(np.array_equal(m, n) for m, n in zip(_masks(first), _masks(other)))


def test_seeds_report_gives_mean_and_std_over_seeds(three_runs):
    first, _, other = three_runs
    rows, markdown = report.seeds_report([first.dir, other.dir])
    assert [row["phase"] for row in rows] == ["dense_fp", "dense_binary", "pruned_stripped"]
    for row in rows:
        phase = row["phase"].replace("_stripped", "")
        values = [100 * first.phases[phase]["test_accuracy"], 100 * other.phases[phase]["test_accuracy"]]
        assert row["test_accuracy_seeds"] == {0: values[0] / 100, 1: values[1] / 100}
        assert f"| {statistics.mean(values):.2f}% ± {statistics.stdev(values):.2f} (n=2) |" in markdown
    assert "seeds [0, 1]" in markdown


def test_seeds_report_refuses_repeated_seeds_and_other_recipes(three_runs, tmp_path):
    first, again, other = three_runs
    with pytest.raises(ValueError, match="one run per seed"):
        report.seeds_report([first.dir, again.dir])
    changed = shutil.copytree(other.dir, tmp_path / "k7")
    state = json.loads((changed / "run.json").read_text())
    state["config"]["inputs_per_neuron"] = 7
    (changed / "run.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="differ in more than the seed"):
        report.seeds_report([first.dir, str(changed)])


def test_iprune_report_of_several_seeds_writes_the_table_once(three_runs, tmp_path, capsys):
    from iprune_tf import cli

    first, _, other = three_runs
    out = tmp_path / "seeds.md"
    assert cli.main(["report", first.dir, other.dir, "--out", str(out)]) == 0
    assert "(n=2) |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "seeds.md.json").read_text())["table"]
    assert [row["test_accuracy_seeds"] for row in rows][0] == {"0": first.phases["dense_fp"]["test_accuracy"],
                                                               "1": other.phases["dense_fp"]["test_accuracy"]}
    assert cli.main(["report", first.dir, other.dir, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
