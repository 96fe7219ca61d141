"""Pruning under tf.distribute.MirroredStrategy on two logical CPU devices, by hand and through the pipeline
(what ``iprune train --strategy mirrored`` runs on several GPUs).

Logical devices must be configured before TensorFlow initializes its runtime, which the other
tests have already done in this process, so the training runs in a fresh interpreter.
"""
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import iprune_tf
    from iprune_tf._keras import keras, tf
    from iprune_tf.workflow.models import mnist_mlp

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = mnist_mlp("binaryconnect_det", hidden_units=(64, 32))
        schedule = iprune_tf.FanInSchedule(1, 6, frequency=2)
        pruned = iprune_tf.prune_fan_in(model, 8, pruning_schedule=schedule, skip=iprune_tf.paper_skip("mnist"))
        pruned.compile(keras.optimizers.Adam(3e-3), "squared_hinge")
    rng = np.random.default_rng(0)
    x = rng.random((256, 28, 28), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, 256), 10) * 2 - 1
    pruned.fit(x, y, epochs=2, batch_size=64, callbacks=[iprune_tf.UpdatePruningStep()], verbose=0)
    report = {"replicas": strategy.num_replicas_in_sync, "layers": {}}
    for layer in pruned.layers:
        if isinstance(layer, iprune_tf.PruneFanIn):
            masks = [m.numpy() for m in layer.mask.values]
            report["layers"][layer.layer.name] = {
                "steps": [int(s.numpy()) for s in layer.pruning_step.values],
                "masks_equal": all(np.array_equal(masks[0], m) for m in masks[1:]),
                "kept": sorted({int(c) for m in masks for c in np.count_nonzero(m, axis=0)}),
                "effective_kept": sorted({int(c) for c in np.count_nonzero(layer.effective_kernel().numpy(), axis=0)}),
            }

    import sys, tempfile
    from iprune_tf.workflow import pipeline
    from iprune_tf.workflow import recipes
    path = tempfile.mkdtemp() + "/data.npz"
    np.savez(path, x_train=(x * 255).astype(np.uint8), y_train=rng.integers(0, 10, 256),
             x_test=(x[:64] * 255).astype(np.uint8), y_test=rng.integers(0, 10, 64))
    config = recipes.RunConfig(data=path, hidden_units=(32, 32), epochs_dense=0, epochs_prune=1, epochs_retrain=0,
                               frequency=1, batch_size=64)
    run = pipeline.train(sys.argv[1], config, verbose=0, strategy=strategy)
    stripped = run.load_model("pruned_stripped")
    report["pipeline"] = {
        "segment": run.segments[0],
        "steps": sorted({int(l.pruning_step.numpy()) for l in run.load_model("pruned").layers if hasattr(l, "pruning_step")}),
        "kept": {name: sorted({int(c) for c in np.count_nonzero(stripped.get_layer(name).kernel.numpy(), axis=0)})
                 for name in ("dense_1", "dense_2")},
    }
    print("REPORT" + json.dumps(report))
    """
)


def test_mirrored_strategy_masks_are_identical_on_both_replicas_with_exactly_k(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT")]
    assert lines, result.stderr[-3000:]
    report = json.loads(lines[0][len("REPORT"):])
    assert report["replicas"] == 2
    assert set(report["layers"]) == {"dense_1", "dense_2"}
    for name, layer in report["layers"].items():
        # 256 samples / global batch 64 = 4 steps per epoch, 2 epochs: one step per global batch.
        assert layer["steps"] == [8, 8], name
        assert layer["masks_equal"], name
        assert layer["kept"] == [8] and layer["effective_kept"] == [8], name
    pipeline = report["pipeline"]  # the same through pipeline.train(strategy=...)
    assert (pipeline["segment"]["strategy"], pipeline["segment"]["replicas"]) == ("MirroredStrategy", 2)
    assert pipeline["steps"] == [4]  # 256 samples / global batch 64
    assert pipeline["kept"] == {"dense_1": [8], "dense_2": [8]}
