"""Knowledge distillation (iprune_tf.workflow.distill): the loss, the config option, the pipeline's teacher."""
import dataclasses
import math

import numpy as np
import pytest

from iprune_tf import cli
from iprune_tf._keras import keras
from iprune_tf.workflow import distill, pipeline, recipes
from iprune_tf.workflow.runs import Run


def _hand_loss(weight, labels, teacher, scores):
    hinge = np.mean(np.maximum(1 - labels * scores, 0) ** 2, axis=1)
    t = np.clip(teacher, -1, 1)
    soft = np.mean(np.maximum(np.abs(t) - np.sign(t) * scores, 0) ** 2, axis=1)
    return np.mean((1 - weight) * hinge + weight * soft)


def test_loss_mixes_the_label_hinge_with_a_hinge_on_the_clipped_teacher_scores():
    labels = np.array([[1, -1, -1], [-1, 1, -1]], np.float32)
    teacher = np.array([[2.5, -0.3, -1.7], [0.4, 0.2, -3.0]], np.float32)
    scores = np.array([[0.5, 0.1, -2.0], [-0.2, 1.4, 0.3]], np.float32)
    packed = distill.packed_targets(labels, teacher)
    np.testing.assert_array_equal(packed[:, 3:], np.float32([[1, -0.3, -1], [0.4, 0.2, -1]]))
    for weight in (0.0, 0.3, 1.0):
        loss = float(distill.DistillationLoss(weight)(packed, scores))
        assert loss == pytest.approx(_hand_loss(weight, labels, teacher, scores), rel=1e-6)
    assert float(distill.DistillationLoss(0.0)(packed, scores)) == pytest.approx(
        float(keras.losses.squared_hinge(labels, scores).numpy().mean()))  # weight 0: the recipe's loss
    other = distill.packed_targets(labels, -teacher)
    assert float(distill.DistillationLoss(0.5)(other, scores)) != pytest.approx(float(distill.DistillationLoss(0.5)(packed, scores)))
    assert distill.DistillationLoss.from_config(distill.DistillationLoss(0.3).get_config()).weight == 0.3


def test_targets_that_do_not_pack_a_teacher_are_refused():
    with pytest.raises(ValueError, match=r"need 2 x 3 columns"):
        distill.DistillationLoss(0.5)(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="the teacher must score the same samples"):
        distill.packed_targets(np.ones((2, 3)), np.ones((2, 4)))


@pytest.mark.parametrize("weight", [-0.1, 1.5, math.nan, True, "0.5"])
def test_bad_weights_are_refused(weight):
    with pytest.raises(ValueError, match=r"distill is the weight of the teacher's term in the loss, a number in \[0, 1\]"):
        recipes.RunConfig(distill=weight)


def test_config_round_trip():
    config = recipes.RunConfig(flavour="binary", distill=0.4)
    assert recipes.RunConfig(**dataclasses.asdict(config)) == config
    assert recipes.RunConfig().distill == 0.0  # off by default, and for runs written before the option


def test_training_on_the_teacher_alone_takes_its_side():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,))])
    recipes.compile_model(model, 0.05, distill=1.0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    teacher = np.tanh(2 * (x[:, :3] - x[:, 1:]))
    packed = distill.packed_targets(-np.ones((64, 3)), teacher)  # labels all -1: weight 1 ignores them
    agree = lambda: np.mean(np.sign(model.predict(x, verbose=0)) == np.sign(teacher))  # noqa: E731
    before = agree()
    history = model.fit(x, packed, batch_size=64, epochs=40, verbose=0).history
    assert agree() > max(before, 0.9)  # on the teacher's side, positive scores against the labels' -1 included
    assert history["loss"][-1] < 0.5 * history["loss"][0] and set(history) == {"loss", "label_accuracy"}


def test_pipeline_distills_both_binary_phases_from_its_dense_fp_net(tmp_path, tiny_mnist_npz, monkeypatch):
    compiled, teachers = [], []
    compile_model, teacher_targets = recipes.compile_model, distill.teacher_targets
    monkeypatch.setattr(recipes, "compile_model", lambda *a, **kw: compiled.append(kw.get("distill")) or compile_model(*a, **kw))
    monkeypatch.setattr(distill, "teacher_targets",
                        lambda teacher, x, y: teachers.append(teacher.get_weights()) or teacher_targets(teacher, x, y))
    config = recipes.RunConfig(data=tiny_mnist_npz, hidden_units=(32, 20), epochs_dense=1, epochs_prune=1,
                               epochs_retrain=0, frequency=1, distill=0.5)
    run = pipeline.train(tmp_path / "run", config, verbose=0)
    assert compiled == [0.0, 0.5, 0.5]  # dense_fp on the labels, dense_binary and pruned distilled
    assert len(teachers) == 2  # the teacher scored the training and the test set once
    for got, saved in zip(teachers[0], run.load_model("dense_fp").get_weights()):
        np.testing.assert_array_equal(got, saved)
    assert Run(run.dir).config.distill == 0.5 and set(run.phases) == {"dense_fp", "dense_binary", "pruned"}


def test_tables_distill_sets_the_tables_phase_weight_only():
    """``--tables-distill``: the teacher's weight in the tables phase; the other phases keep ``--distill``'s."""
    args = cli.parser().parse_args(["train", "--out", "runs/x", "--flavour", "binary", "--distill", "0.25",
                                    "--epochs-tables", "2", "--tables-distill", "0.75"])
    config = cli._run_config(args)
    assert [config.distill_weight(p) for p in ("dense_fp", "dense_binary", "pruned", "tables")] == [0, 0.25, 0.25, 0.75]
    unset = recipes.RunConfig(flavour="binary", epochs_tables=2, distill=0.5)
    assert unset.distill_weight("tables") == 0.5 and unset.tables_distill is None  # distill's, as before the option
    off = recipes.RunConfig(flavour="binary", epochs_tables=2, distill=0.5, tables_distill=0.0)
    assert off.distill_weight("tables") == 0.0 and recipes.RunConfig(**dataclasses.asdict(off)) == off


def test_pipeline_distills_only_the_tables_phase(tmp_path, tiny_mnist_npz, monkeypatch):
    compiled, scored = [], []
    compile_model, teacher_targets = recipes.compile_model, distill.teacher_targets
    monkeypatch.setattr(recipes, "compile_model", lambda *a, **kw: compiled.append(kw.get("distill")) or compile_model(*a, **kw))
    monkeypatch.setattr(distill, "teacher_targets", lambda t, x, y: scored.append(len(x)) or teacher_targets(t, x, y))
    config = recipes.RunConfig(data=tiny_mnist_npz, flavour="binary", hidden_units=(32, 20), inputs_per_neuron=4,
                               epochs_dense=1, epochs_prune=1, epochs_retrain=0, frequency=1, epochs_tables=1,
                               tables_distill=0.75)
    run = pipeline.train(tmp_path / "run", config, verbose=0)
    assert compiled == [0.0, 0.0, 0.0, 0.75]  # dense_fp, dense_binary and pruned on the labels; tables distilled
    assert len(scored) == 2  # the teacher scored the training and the test set once, for the tables phase
    assert Run(run.dir).config.tables_distill == 0.75 and "tables" in run.phases


@pytest.mark.parametrize("extra, message", [
    (["--tables-distill", "1.5"], "tables_distill is the weight of the teacher's term"),
    (["--epochs-tables", "0", "--tables-distill", "0.5"], "leaves no tables phase")])
def test_cli_refuses_a_tables_distill_that_cannot_apply(tmp_path, capsys, tiny_mnist_npz, extra, message):
    out = tmp_path / "run"
    code = cli.main(["train", "--data", tiny_mnist_npz, "--out", str(out), "--flavour", "binary",
                     "--epochs-tables", "2", *extra])
    assert code == 2 and message in capsys.readouterr().err and not out.exists()


def test_cli_refuses_a_bad_weight_before_training(tmp_path, capsys, tiny_mnist_npz):
    out = tmp_path / "run"
    assert cli.main(["train", "--data", tiny_mnist_npz, "--out", str(out), "--distill", "1.5"]) == 2
    assert "distill is the weight" in capsys.readouterr().err and not out.exists()
