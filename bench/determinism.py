"""What makes a seeded run differ between machines, and what removing it costs in step time.

    python bench/determinism.py [--steps 300] [--rounds 1]

Each setting trains the MNIST preset (BinaryConnect, pruned to K=8 with masks every 100 steps) for
``--steps`` steps of batch 100 on Fashion-MNIST from seed 0, in a fresh process (oneDNN is chosen at
import time), and records a SHA-256 of all final weights and the best steps/s over chunks of 100
steps (wall) and the least process CPU time per 100 steps (the cost that a loaded machine does not
hide). Equal hashes mean bit-identical training. A machine of another kind is emulated by what
differs between machines: whether TensorFlow turns its oneDNN graph ops on (by default only on CPUs
with AVX-512 VNNI/BF16 or AMX), the instruction set of the oneDNN matrix kernels that TensorFlow
uses even with those ops off (``ONEDNN_MAX_CPU_ISA``), and the number of threads (one intra-op
thread per core by default).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

STEPS_PER_CHUNK = 100

# name -> (environment, intra- and inter-op threads or 0 for TF's default, op determinism)
DEFAULT = "default (this AVX2 CPU: oneDNN graph ops off), threads = cores"
PORTABLE = {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SETTINGS = {
    DEFAULT: ({}, 0, False),
    "default, again (another process)": ({}, 0, False),
    "TF_ENABLE_ONEDNN_OPTS=1 (TF's default on AVX-512 VNNI/AMX CPUs)": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, 0, False),
    "ONEDNN_MAX_CPU_ISA=AVX (a CPU without AVX2)": ({"ONEDNN_MAX_CPU_ISA": "AVX"}, 0, False),
    "1 thread": ({}, 1, False),
    "4 threads (a 4-core machine)": ({}, 4, False),
    "op determinism": ({}, 0, True),
    "portable: TF_ENABLE_ONEDNN_OPTS=0, ONEDNN_MAX_CPU_ISA=AVX2, 2 threads": (PORTABLE, 2, False),
}


def worker(steps, threads, determinism):
    """Train in this process; print one JSON line: weights hash, final loss, best steps/s."""
    import iprune_tf
    from iprune_tf._keras import keras, tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if determinism:
        tf.config.experimental.enable_op_determinism()
    from common import fashion_mnist
    from iprune_tf.workflow import models
    from iprune_tf.workflow import recipes

    keras.utils.set_random_seed(0)
    x, y, *_ = fashion_mnist(limit_train=steps * 100)
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=steps, frequency=100)
    model = iprune_tf.prune_fan_in(models.mnist_mlp("binaryconnect_det"), 8, schedule, skip=iprune_tf.paper_skip("mnist"))
    recipes.compile_model(model, weight_decay=recipes.WEIGHT_DECAY)
    times = []  # (wall, process CPU) at the end of every chunk of STEPS_PER_CHUNK steps

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % STEPS_PER_CHUNK == 0:
                times.append((time.perf_counter(), time.process_time()))

    times.append((time.perf_counter(), time.process_time()))
    history = model.fit(x, y, batch_size=100, epochs=1, verbose=0, callbacks=[iprune_tf.UpdatePruningStep(), Clock()])
    chunks = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(times[:-1], times[1:])][1:]  # the first one includes tracing
    digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    print(json.dumps({"sha256": digest[:16], "loss": history.history["loss"][-1],
                      "steps_per_s": STEPS_PER_CHUNK / min(wall for wall, _ in chunks),
                      "cpu_s_per_100_steps": 100 / STEPS_PER_CHUNK * min(cpu for _, cpu in chunks)}))


def run_setting(name, steps):
    env_extra, threads, determinism = SETTINGS[name]
    env = dict(os.environ, **env_extra, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--steps", str(steps), "--threads", str(threads)]
    cmd += ["--determinism"] if determinism else []
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--determinism", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.threads, args.determinism)
    runs = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):  # settings interleaved round by round: load on the machine hits all alike
        for name in SETTINGS:
            runs[name].append(run_setting(name, args.steps))
            print(name, runs[name][-1], flush=True)
    summarize(runs, args)


def summarize(runs, args):
    from common import print_table, write_result

    reference = runs[DEFAULT][0].get("sha256")
    base_speed = max(r.get("steps_per_s", 0) for r in runs[DEFAULT])
    table = {}
    for name, results in runs.items():
        ok = [r for r in results if "sha256" in r]
        table[name] = {
            "hashes": [r.get("sha256", r.get("error")) for r in results],
            "same_as_default": bool(ok) and all(r["sha256"] == reference for r in ok),
            "steps_per_s_best": round(max((r["steps_per_s"] for r in ok), default=0), 1),
            "step_time_vs_default": round(base_speed / max((r["steps_per_s"] for r in ok), default=float("nan")), 2),
            "cpu_s_per_100_steps": round(min((r["cpu_s_per_100_steps"] for r in ok), default=float("nan")), 2),
        }
    rows = [(n, t["hashes"][0], t["same_as_default"], t["steps_per_s_best"], t["step_time_vs_default"],
             t["cpu_s_per_100_steps"]) for n, t in table.items()]
    print_table(["setting", "weights sha256", "= default", "steps/s", "step time", "CPU s / 100 steps"], rows)
    write_result("determinism", {"steps": args.steps, "rounds": args.rounds, "settings": table},
                 f"python bench/determinism.py --steps {args.steps} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
