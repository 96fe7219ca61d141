"""Start a run from another run's finished full-precision phase, for a recipe that changes only the binary phases.

    python bench/conv_fork.py SRC_RUN train [iprune train options ... --out NEW_RUN]
    iprune train [the same options] --resume        # trains the binary phases only

Creates NEW_RUN with the config the ``iprune train`` options give and copies SRC_RUN's ``dense_fp``
model and results into it (marked ``copied_from``), after checking that everything the
full-precision phase depends on is the same in both configs. The copy is what the pipeline would
train itself: a phase starts from a seed of ``(seed, phase)`` and visits the data in an order of
``(seed, phase, epoch)``, so an equal config gives an equal net (it saves ~11 minutes per conv seed).
"""
import os
import shutil
import sys

from iprune_tf import cli
from iprune_tf.workflow.runs import Run

FP_FIELDS = ("preset", "data", "limit_train", "limit_test", "batch_size", "learning_rate", "weight_decay",
             "weight_decay_mode", "seed", "hidden_units", "input_encoding", "width", "zca", "fp_epochs")
"""What the ``dense_fp`` phase reads from the config (its epochs are ``fp_epochs``)."""


def fork(src_dir, argv):
    """NEW_RUN (``--out`` of the ``iprune train`` arguments ``argv``) holding ``src_dir``'s full-precision phase."""
    args = cli.parser().parse_args(argv)
    config, src = cli._run_config(args), Run(src_dir)
    if not src.done("dense_fp"):
        raise ValueError(f"{src_dir} has no finished dense_fp phase to copy.")
    differ = [f"{f}: {getattr(src.config, f)!r} -> {getattr(config, f)!r}" for f in FP_FIELDS
              if getattr(src.config, f) != getattr(config, f)]
    if differ:
        raise ValueError(f"{src_dir}'s full-precision phase was trained under another config ({', '.join(differ)}).")
    run = Run.create(args.out, config)
    shutil.copyfile(src.model_path("dense_fp"), run.model_path("dense_fp"))
    if os.path.exists(os.path.join(src.dir, "zca.npz")):
        shutil.copyfile(os.path.join(src.dir, "zca.npz"), os.path.join(run.dir, "zca.npz"))
    run.phases["dense_fp"] = {**src.phases["dense_fp"], "copied_from": os.path.abspath(src.dir)}
    run.save()
    return run


if __name__ == "__main__":
    print(f"{fork(sys.argv[1], sys.argv[2:]).dir}: dense_fp copied from {sys.argv[1]}")
