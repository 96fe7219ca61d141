"""Wall time of each script in examples/ at its default setting, with the machine's load, as JSON.

    python bench/examples_times.py [--out bench/results/examples_times.json] [script ...]

Each script runs as its own process (``python examples/X.py --out TMP``), one after the other; the
record keeps its wall time, the CPU time of the process and its children (user + system), the
1-minute load average before and after, and the script's last lines (accuracy, agreement).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("keras_cnn_to_cortex_m.py", "lut_net_to_verilog.py", "prune_binaryconnect_mlp.py")


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_script(script, work_dir):
    """One default run of ``examples/script``: its figures as a dict (raises if it fails)."""
    load_before, cpu_before, start = os.getloadavg()[0], _children_cpu(), time.time()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--out", work_dir],
                            capture_output=True, text=True, cwd=ROOT)
    wall, cpu = time.time() - start, _children_cpu() - cpu_before
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{result.stderr[-3000:]}")
    return {"script": script, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_1min_before": load_before,
            "load_1min_after": os.getloadavg()[0], "cores": os.cpu_count(),
            "last_lines": result.stdout.strip().splitlines()[-6:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", default=list(SCRIPTS))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "examples_times.json"))
    args = parser.parse_args()
    records = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            records = {r["script"]: r for r in json.load(f)["runs"]}
    for script in args.scripts:
        with tempfile.TemporaryDirectory() as work:
            records[script] = dict(time_script(script, work), measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        print(json.dumps(records[script], indent=1), flush=True)
        with open(args.out, "w") as f:
            json.dump({"runs": list(records.values())}, f, indent=1)


if __name__ == "__main__":
    main()
