"""Lever screen: shrink the kept latent weights before retraining, so binary signs can flip again.

After pruning to K, the kept latent weights are the largest ones, most of them near BinaryConnect's
clip at 1: under Adam (about one rate-sized step per batch) a sign flip then takes hundreds of
consistent steps, and fewer than 1% of the kept signs change during retraining. Multiplying the
kept latents by ``alpha`` keeps every sign (the forward pass is unchanged) and lowers that inertia.
Each alpha retrains from the same after-pruning state (weights, masks, Adam state) with the run's recipe.

    python bench/latent_rescale.py runs/seeds10k/s0 --alphas 1.0 0.25
"""
import argparse
import dataclasses
import sys

import numpy as np

import iprune_tf
from accuracy_seeds import _state, retrain_branch
from common import write_result
from iprune_tf._keras import keras
from iprune_tf.pruning.layers import latent_kernel
from iprune_tf.pruning.prune import prune_fan_in
from iprune_tf.workflow import preparation
from iprune_tf.workflow import recipes
from iprune_tf.workflow.data import to_hinge_targets
from iprune_tf.workflow.runs import Run


def sign_flips(layers, signs):
    """Per pruned layer, the fraction of kept connections whose latent sign differs from ``signs``."""
    return {l.name: round(float(np.mean((np.sign(latent_kernel(l.layer).numpy()) != signs[l.name])[l.mask.numpy() > 0])), 4)
            for l in layers}


def screen(run_dir, alphas, inputs=8):
    """Prune ``run_dir``'s dense binary net with its own recipe, then retrain once per alpha."""
    run = Run(run_dir)
    config = dataclasses.replace(run.config, inputs_per_neuron=inputs)
    keras.utils.set_random_seed(config.seed)
    data, _ = preparation.prepare_data(config, run.dir)
    y = to_hinge_targets(data.y_train, data.num_classes)
    model = prune_fan_in(run.load_model("dense_binary"), inputs, recipes.pruning_schedule(config, len(data.x_train)),
                         skip=recipes.skip_list(config))
    recipes.compile_model(model, config.learning_rate, recipes.decoupled_decay(config))
    model.fit(data.x_train, y, epochs=config.epochs_prune, callbacks=[iprune_tf.UpdatePruningStep()],
              batch_size=config.batch_size, verbose=2)
    result = {"run": run_dir, "seed": config.seed, "config": dataclasses.asdict(config),
              "after_pruning": recipes.top1_accuracy(model, data.x_test, data.y_test), "alphas": {}}
    saved = [v.numpy() for v in _state(model)]
    pruned = [l for l in model.layers if isinstance(l, iprune_tf.PruneFanIn)]
    for alpha in alphas:
        signs = {}

        def shrink(alpha=alpha):
            for layer in pruned:
                signs[layer.name] = np.sign(latent_kernel(layer.layer).numpy())
                latent_kernel(layer.layer).assign(latent_kernel(layer.layer) * alpha)

        branch = retrain_branch(model, saved, config, data, y, prepare=shrink)
        result["alphas"][str(alpha)] = dict(branch, kept_signs_flipped_in_retraining=sign_flips(pruned, signs))
        print(alpha, result["alphas"][str(alpha)], flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--inputs", type=int, default=8)
    args = parser.parse_args()
    result = screen(args.run_dir, args.alphas, args.inputs)
    write_result("latent_rescale", result,
                 f"python bench/latent_rescale.py {args.run_dir} --alphas {' '.join(map(str, args.alphas))}")


if __name__ == "__main__":
    sys.exit(main())
