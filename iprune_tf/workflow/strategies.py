"""``tf.distribute`` strategies for ``iprune train --strategy``: one device, local devices, several machines."""
import json
import os

from iprune_tf._keras import tf

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name="default"):
    """The strategy called ``name``; create it before any other TensorFlow work (multi-worker needs that).

    ``mirrored``: every local GPU (the CPU when there is none); ``multiworker``:
    ``MultiWorkerMirroredStrategy`` over the cluster described by the ``TF_CONFIG`` environment variable.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy '{name}'; choose one of {STRATEGIES}.")


def check_tf_config(text):
    """Raise ValueError unless ``text`` is a TF_CONFIG naming a cluster and this process's task in it."""
    if not text:
        raise ValueError("--strategy multiworker reads the cluster from the TF_CONFIG environment variable, which is "
                         'not set; e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}\'.')
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        members[task["index"]]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ValueError(f"TF_CONFIG must name a cluster and this task in it ({error!r}): {text}") from error


def is_chief(strategy):
    """True for the one process that writes files (always, except on non-chief workers of a cluster)."""
    return bool(strategy.extended.should_checkpoint)


def describe(strategy):
    """``{"strategy", "replicas", "workers"}`` for run.json's segment record."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    workers = sum(len(tasks) for kind, tasks in spec.items() if kind in ("chief", "worker")) or 1
    name = "MultiWorkerMirroredStrategy" if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) else None
    return {"strategy": name or type(strategy).__name__, "replicas": strategy.num_replicas_in_sync, "workers": workers}
