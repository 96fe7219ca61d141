"""The conv preset's runs: every phase's test accuracy and wall time, mean ± std over seeds.

    python bench/conv_results.py --seeds RUN RUN RUN [--baseline RUN RUN RUN] [--single RUN ...] [--name conv_seeds]

Reads the run directories written by ``iprune train`` and writes ``bench/results/<name>.json``: each
run's config, data and phases (test accuracy, wall time), and per phase the mean and sample std over
the seed runs plus the paired gaps to the full-precision and to the dense binary net of the same run
(same seed, same width): what binarizing costs, and what pruning costs on top. ``--baseline``: runs of
another recipe on the same seeds (in the same order), summarized alike, and per phase the paired
difference seed run minus baseline run: what the recipe change gains.
Table 1 (memory, operations) comes from ``iprune report RUN RUN RUN --out ...``.
"""
import argparse
import dataclasses
import statistics
import sys

from common import print_table, write_result
from iprune_tf.workflow.runs import PHASES, Run


def run_summary(run):
    """Config, data and ``{phase: {test_accuracy, wall_time_s, copied_from?}}`` of a run (``copied_from``: a
    ``dense_fp`` phase taken from another run by ``conv_fork.py``, its wall time that run's)."""
    phases = {name: {key: run.phases[name][key] for key in ("test_accuracy", "wall_time_s", "copied_from")
                     if key in run.phases[name]} for name in PHASES if name in run.phases}
    return {"dir": run.dir, "config": dataclasses.asdict(run.config), "data": run.data, "phases": phases}


def mean_std(values):
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def paired_gap(summaries, phase, reference):
    """mean ± std of ``phase`` minus ``reference`` test accuracy within each run that finished both."""
    gaps = [s["phases"][phase]["test_accuracy"] - s["phases"][reference]["test_accuracy"]
            for s in summaries if phase in s["phases"] and reference in s["phases"]]
    return mean_std(gaps) if gaps else None


def seeds_summary(summaries):
    """Per phase: accuracy and wall time mean ± std and the paired gaps, over the runs that finished it."""
    out = {}
    for name in PHASES:
        done = [s["phases"][name] for s in summaries if name in s["phases"]]
        if not done:
            continue
        out[name] = {"test_accuracy": mean_std([p["test_accuracy"] for p in done]),
                     "wall_time_s": mean_std([p["wall_time_s"] for p in done]),
                     "gap_to_dense_fp": paired_gap(summaries, name, "dense_fp"),
                     "gap_to_dense_binary": paired_gap(summaries, name, "dense_binary")}
    return out


def lever_gain(summaries, baselines):
    """Per phase: mean ± std over seeds of the seed run's accuracy minus its baseline run's (same seed, in order)."""
    for run, base in zip(summaries, baselines):
        if run["config"]["seed"] != base["config"]["seed"]:
            raise ValueError(f"{run['dir']} (seed {run['config']['seed']}) is paired with {base['dir']} "
                             f"(seed {base['config']['seed']}): give --baseline in the order of --seeds.")
    return {name: mean_std([r["phases"][name]["test_accuracy"] - b["phases"][name]["test_accuracy"]
                            for r, b in zip(summaries, baselines)])
            for name in PHASES if all(name in s["phases"] for s in (*summaries, *baselines))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", required=True, help="runs of one recipe, one per seed")
    parser.add_argument("--baseline", nargs="*", default=[], help="another recipe's runs, one per seed, in --seeds' order")
    parser.add_argument("--single", nargs="*", default=[], help="other runs (fully binary, levers), one by one")
    parser.add_argument("--name", default="conv_seeds")
    args = parser.parse_args()
    seeds = [run_summary(Run(d)) for d in args.seeds]
    single = [run_summary(Run(d)) for d in args.single]
    summary = seeds_summary(seeds)
    gap = lambda g: "-" if g is None else f"{100 * g['mean']:+.2f} ± {100 * g['std']:.2f}"
    rows = [(name, f"{100 * s['test_accuracy']['mean']:.2f} ± {100 * s['test_accuracy']['std']:.2f}",
             gap(s["gap_to_dense_fp"]), gap(s["gap_to_dense_binary"]), f"{s['wall_time_s']['mean'] / 60:.1f}",
             s["test_accuracy"]["n"]) for name, s in summary.items()]
    print_table(("phase", "accuracy %", "- FP (paired)", "- dense binary (paired)", "wall min", "runs"), rows)
    baselines = [run_summary(Run(d)) for d in args.baseline]
    extra = {}
    if baselines:
        extra = {"baseline_runs": baselines, "baseline_summary": seeds_summary(baselines),
                 "gain_over_baseline": lever_gain(seeds, baselines)}
        print("gain over the baseline (paired):", {name: gap(g) for name, g in extra["gain_over_baseline"].items()})
    for run in single:
        fp = run["phases"]["dense_fp"]["test_accuracy"]
        print(run["dir"], {name: f"{100 * p['test_accuracy']:.2f} ({100 * (p['test_accuracy'] - fp):+.2f})"
                           for name, p in run["phases"].items()})
    write_result(args.name, {"seed_runs": seeds, "seeds_summary": summary, "single_runs": single, **extra},
                 "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
