"""Schedules give the expected per-step input counts and update steps."""
import numpy as np
import pytest

import iprune_tf
from iprune_tf import cli
from iprune_tf.pruning import schedules as sched
from iprune_tf.workflow import recipes
from iprune_tf._keras import tf


def counts(schedule, steps, fan_in, k):
    pairs = [schedule(tf.constant(s, tf.int64), fan_in, k) for s in steps]
    return [bool(u) for u, _ in pairs], [int(c) for _, c in pairs]


def test_geometric_fan_in_schedule_halves_each_step():
    updates, kept = counts(iprune_tf.FanInSchedule(0, 7, frequency=1), range(10), 1024, 8)
    assert kept == [1024, 512, 256, 128, 64, 32, 16, 8, 8, 8]
    assert updates == [True] * 8 + [False] * 2


def test_linear_fan_in_schedule_and_frequency():
    schedule = iprune_tf.FanInSchedule(10, 19, frequency=3, interpolation="linear")
    updates, kept = counts(schedule, range(9, 21), 100, 10)
    assert kept == [100, 100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 10]
    # Every 3rd step from begin_step, plus end_step itself.
    assert [s for s, u in zip(range(9, 21), updates) if u] == [10, 13, 16, 19]


def test_last_halving_gets_its_fraction_of_the_steps():
    # 1024 -> 16 geometrically over the first 40% of the steps, then 16 -> 8 over the last 60%.
    _, kept = counts(iprune_tf.FanInSchedule(0, 10, frequency=1, last_halving=0.6), range(12), 1024, 8)
    assert kept == [1024, 362, 128, 45, 16, 14, 13, 11, 10, 9, 8, 8]
    # A fan-in below 2K holds until the knee, then shrinks to K.
    _, kept = counts(iprune_tf.FanInSchedule(0, 10, frequency=1, last_halving=0.5), [0, 4, 5, 10], 12, 8)
    assert kept == [12, 12, 12, 8]


def test_last_halving_reaches_the_run_config_and_the_command_line():
    config = recipes.RunConfig(epochs_prune=2, last_halving=0.6)
    schedule = recipes.pruning_schedule(config, n_train=1000)
    assert schedule == iprune_tf.FanInSchedule(1, 20, frequency=100, last_halving=0.6)
    for bad in (1.0, 0, True, "0.6"):
        with pytest.raises(ValueError, match="last_halving must be a fraction"):
            recipes.RunConfig(last_halving=bad)
    args = cli.parser().parse_args(["train", "--out", "runs/x", "--last-halving", "0.6"])
    assert cli._run_config(args).last_halving == 0.6
    assert cli._run_config(cli.parser().parse_args(["train", "--out", "runs/x"])).last_halving is None


def test_one_shot_schedule_prunes_to_k_at_its_step():
    updates, kept = counts(iprune_tf.FanInSchedule(5, 5), [4, 5, 6], 784, 8)
    assert kept == [784, 8, 8] and updates == [False, True, False]


def test_tfmot_sparsity_maps_to_inputs_per_neuron():
    schedule = iprune_tf.PolynomialDecay(0.0, 0.995, begin_step=0, end_step=10, frequency=4)
    _, kept = zip(*[sched.schedule_step(schedule, tf.constant(s, tf.int64), 784, 8) for s in (0, 10)])
    assert [int(k) for k in kept] == [784, 8]
    assert int(sched.inputs_for_sparsity(0.5, 784, 8)) == 392
    assert int(sched.inputs_for_sparsity(0.999, 784, 8)) == 8


def test_tfmot_schedule_also_updates_at_its_end_step():
    schedule = iprune_tf.PolynomialDecay(0.0, 0.995, begin_step=0, end_step=10, frequency=4)
    updates = [bool(sched.schedule_step(schedule, tf.constant(s, tf.int64), 784, 8)[0]) for s in range(12)]
    assert [s for s, u in enumerate(updates) if u] == [0, 4, 8, 10]


def test_schedule_that_stops_above_k_is_an_error():
    with pytest.raises(ValueError, match="keeps 79 of 784 inputs.*inputs_per_neuron=8.*0.989796"):
        sched.check_schedule_reaches_k(iprune_tf.ConstantSparsity(0.9, 0), 784, 8, "dense_1")
    sched.check_schedule_reaches_k(iprune_tf.ConstantSparsity(0.9899, 0), 784, 8, "dense_1")


@pytest.mark.parametrize(
    "schedule",
    [
        iprune_tf.FanInSchedule(3, 300, frequency=7, interpolation="linear"),
        iprune_tf.FanInSchedule(1, 900, frequency=10, last_halving=0.6),
        iprune_tf.ConstantSparsity(0.995, 10),
        iprune_tf.PolynomialDecay(0.5, 0.999, 0, 100),
    ],
)
def test_schedule_config_round_trip(schedule):
    rebuilt = sched.deserialize(sched.serialize(schedule))
    assert type(rebuilt) is type(schedule) and rebuilt.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(begin_step=5, end_step=2), "begin_step <= end_step"),
        (dict(frequency=0), "frequency must be >= 1"),
        (dict(interpolation="cubic"), "interpolation must be one of"),
        (dict(begin_step=1.5), "begin_step must be an int"),
        (dict(last_halving=1.0), "last_halving must be a fraction in"),
        (dict(last_halving=True), "last_halving must be a fraction in"),
        (dict(last_halving=0.5, interpolation="linear"), "last_halving needs interpolation='geometric'"),
    ],
)
def test_fan_in_schedule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        iprune_tf.FanInSchedule(**kwargs)


def test_unknown_schedule_objects_are_rejected():
    with pytest.raises(TypeError, match="pruning_schedule must be"):
        sched.require_schedule(lambda step: (True, 0.5))
    with pytest.raises(ValueError, match="Unknown pruning schedule 'Cosine'"):
        sched.deserialize({"class_name": "Cosine", "config": {}})
    assert np.isclose(sched.final_sparsity(iprune_tf.ConstantSparsity(0.3, 0)), 0.3)
