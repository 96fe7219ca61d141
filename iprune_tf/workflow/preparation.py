"""The run's inputs: its data set loaded, shaped for the preset and whitened (ZCA) where the recipe says so.

The paper whitens CIFAR-10 (ZCA fitted on the training set) and leaves MNIST-like data as it is;
the fitted transform is stored in the run directory so that resume, report and export see the same inputs.
"""

import dataclasses
import os

from iprune_tf.workflow import data as data_lib
from iprune_tf.workflow import models
from iprune_tf.workflow.checkpoints import atomic_write


def prepare_data(config, run_dir=None):
    """Load the run's data and apply its preprocessing (ZCA for presets that use it).

    The ZCA transform is fitted on the training set once and stored as ``RUN_DIR/zca.npz``;
    later calls (resume, report, export) load it, so every input sees the same transform.
    Returns ``(dataset, zca or None)`` with ``x_*`` preprocessed and ``y_*`` as class indices.
    """
    return preprocess(config, data_lib.load_dataset(config.data, config.limit_train, config.limit_test), run_dir)


def uses_zca(config):
    """Whether the run whitens its inputs: the config's ``zca``, else the preset's choice."""
    return models.get_preset(config.preset).zca if config.zca is None else config.zca


def preprocessing(config):
    """What run.json records as the run's preprocessing, with the reason when ZCA is switched off."""
    if uses_zca(config):
        return "zca"
    if models.get_preset(config.preset).zca:
        return ("none: zca=False in the run's config (the paper whitens CIFAR-10 only, not MNIST-like data; "
                "a deployed net would also need the H*W*C-square whitening matrix on the device)")
    return "none"


def as_images(config, dataset):
    """``dataset`` with a channel axis added to (N, H, W) inputs when the preset's model takes images."""
    if not models.get_preset(config.preset).images or dataset.x_train.ndim != 3:
        return dataset
    return dataclasses.replace(dataset, x_train=dataset.x_train[..., None], x_test=dataset.x_test[..., None])


def preprocess(config, dataset, run_dir=None):
    """:func:`prepare_data` on a loaded ``dataset``."""
    dataset = as_images(config, dataset)
    if not uses_zca(config):
        return dataset, None
    zca_path = os.path.join(run_dir, "zca.npz") if run_dir else None
    if zca_path and os.path.exists(zca_path):
        zca = data_lib.ZCAWhitening.load(zca_path)
    else:
        zca = data_lib.ZCAWhitening().fit(dataset.x_train)
        if zca_path:
            atomic_write(zca_path, zca.save)
    whitened = dataclasses.replace(dataset, x_train=zca.transform(dataset.x_train), x_test=zca.transform(dataset.x_test))
    return whitened, zca
