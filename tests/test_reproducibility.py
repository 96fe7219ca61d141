"""What ``--seed`` reproduces: on one machine, the same seed gives bit-identical weights and masks.

Seeded: the initializers, the data order of every epoch and the stochastic quantizer's draws
(``keras.utils.set_random_seed`` at the start of ``recipes.train``). Across machines the float
sums themselves may differ (oneDNN kernels, thread counts); see bench/determinism.py.
"""
import dataclasses

import numpy as np
import pytest

from conftest import TINY_RUN
from iprune_tf import recipes

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
    return [recipes.train(root / f"run{i}", dataclasses.replace(config, seed=seed), verbose=0)
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
