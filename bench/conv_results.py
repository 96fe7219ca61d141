"""The conv preset's runs: every phase's test accuracy and wall time, mean ± std over seeds.

    python bench/conv_results.py --seeds RUN RUN RUN [--binary RUN] [--name conv_seeds]

Reads the run directories written by ``iprune train`` and writes ``bench/results/<name>.json``: each
run's config, data and phases (test accuracy, wall time), and per phase the mean and sample std over
the seed runs plus the paired gap to the full-precision net of the same run (same seed, same width).
Table 1 (memory, operations) comes from ``iprune report RUN RUN RUN --out ...``.
"""
import argparse
import dataclasses
import statistics
import sys

from common import print_table, write_result
from iprune_tf.workflow.runs import PHASES, Run


def run_summary(run):
    """Config, data and ``{phase: {test_accuracy, wall_time_s}}`` of a run."""
    phases = {name: {"test_accuracy": run.phases[name]["test_accuracy"], "wall_time_s": run.phases[name]["wall_time_s"]}
              for name in PHASES if name in run.phases}
    return {"dir": run.dir, "config": dataclasses.asdict(run.config), "data": run.data, "phases": phases}


def mean_std(values):
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def seeds_summary(summaries):
    """Per phase: accuracy and wall time mean ± std, and the paired gap to dense_fp, over runs that finished it."""
    out = {}
    for name in PHASES:
        done = [s["phases"][name] for s in summaries if name in s["phases"]]
        if not done:
            continue
        gaps = [s["phases"][name]["test_accuracy"] - s["phases"]["dense_fp"]["test_accuracy"]
                for s in summaries if name in s["phases"] and "dense_fp" in s["phases"]]
        out[name] = {"test_accuracy": mean_std([p["test_accuracy"] for p in done]),
                     "wall_time_s": mean_std([p["wall_time_s"] for p in done]),
                     "gap_to_dense_fp": mean_std(gaps) if gaps else None}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", required=True, help="runs of one recipe, one per seed")
    parser.add_argument("--binary", nargs="*", default=[], help="fully binary runs, reported alone")
    parser.add_argument("--name", default="conv_seeds")
    args = parser.parse_args()
    seeds = [run_summary(Run(d)) for d in args.seeds]
    binary = [run_summary(Run(d)) for d in args.binary]
    summary = seeds_summary(seeds)
    rows = [(name, f"{100 * s['test_accuracy']['mean']:.2f} ± {100 * s['test_accuracy']['std']:.2f}",
             "-" if s["gap_to_dense_fp"] is None else f"{100 * s['gap_to_dense_fp']['mean']:+.2f}",
             f"{s['wall_time_s']['mean'] / 60:.1f}", s["test_accuracy"]["n"]) for name, s in summary.items()]
    print_table(("phase", "accuracy %", "gap to FP (paired)", "wall min", "runs"), rows)
    for b in binary:
        print("binary", b["dir"], {name: round(100 * p["test_accuracy"], 2) for name, p in b["phases"].items()})
    write_result(args.name, {"seed_runs": seeds, "seeds_summary": summary, "binary_runs": binary},
                 "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
