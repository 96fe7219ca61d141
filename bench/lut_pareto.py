"""Issue 19's accuracy-against-LUTs table, from ``bench/results/lut_accuracy.json``.

One row per finished configuration (test set; the validation screens ``s_*``/``*_val`` are left out),
K and head scores (``affine``, or ``ranks`` for rank-table class scores): mean ± std of the Keras
test accuracy over its seeds (``<config>``, ``<config>_s1``, ...), LUT6 and iCE40 LUT4 (Yosys,
the network without I/O) per seed, and how many netlists equalled Keras on all 10,000 test images.
A row is on the Pareto front when no other row is at least as accurate with no more LUT6 (means;
rows of one seed are compared like the others, their ``n`` says how far to trust them). The issue's accuracy target
(mean of at least 3 seeds) holds for every K; at K=6 the circuit must also fit the LUT6 budget on every seed.

    python bench/lut_pareto.py   # -> bench/results/lut_pareto.json and lut_pareto.md
"""
import json
import os
import re
import statistics
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
K_KEY = re.compile(r"k(\d+)\Z")
SEED_SUFFIX = re.compile(r"_s(\d+)\Z")
LUT_BUDGET, TARGET = 3000, 86.9  # issue 19 at K=6: the whole circuit, the mean accuracy


def final_runs(configs):
    """{configuration: {seed: entry}} of the test-set runs (seed 0 is the name without ``_s<seed>``)."""
    runs = {}
    for name, entry in configs.items():
        if name.startswith("s_") or name.endswith("_val"):
            continue
        match = SEED_SUFFIX.search(name)
        base, seed = (name[: match.start()], int(match.group(1))) if match else (name, 0)
        runs.setdefault(base, {})[seed] = entry
    return runs


def rows(configs):
    """The table's rows (dicts), sorted by LUT6 then accuracy; rows without any LUT6 figure come last."""
    table = []
    for base, seeds in sorted(final_runs(configs).items()):
        setting = next((e["config"] for e in seeds.values() if "config" in e), {})
        ks = sorted({int(m.group(1)) for e in seeds.values() for key in e if (m := K_KEY.match(key))})
        for k in ks:
            for scores, suffix in (("affine", ""), ("ranks", "_ranks")):
                row = _row(base, setting, seeds, k, scores, f"k{k}_hardware{suffix}")
                if row is not None:
                    table.append(row)
    _mark_front(table)
    return sorted(table, key=lambda r: (r["lut6_mean"] is None, r["lut6_mean"] or 0, -r["accuracy_mean"]))


def _row(base, setting, seeds, k, scores, hardware_key):
    trained = {s: e for s, e in sorted(seeds.items()) if f"k{k}" in e}
    if scores == "ranks" and not any(hardware_key in e for e in trained.values()):
        return None
    accuracy = [100 * e[f"k{k}"]["keras_test_accuracy"] for e in trained.values()]
    hardware = {s: e[hardware_key] for s, e in trained.items() if hardware_key in e}
    lut6 = [h["lut6"]["total"]["luts"] for h in hardware.values() if "lut6" in h]
    checks = [h["netlist_equals_keras"] for h in hardware.values() if "netlist_equals_keras" in h]
    return {
        "config": base, "k": k, "scores": scores, "head": setting.get("head", "dense"),
        "hidden": setting.get("hidden"), "encoding": setting.get("encoding"),
        "tables": "table_epochs" in setting, "seeds": list(trained),
        "accuracy": accuracy, "accuracy_mean": statistics.mean(accuracy),
        "accuracy_std": statistics.stdev(accuracy) if len(accuracy) > 1 else None,
        "lut6": lut6, "lut6_mean": statistics.mean(lut6) if lut6 else None,
        "ice40_lut4": [h["ice40"]["total"]["luts"] for h in hardware.values() if "ice40" in h],
        "netlist_checks": checks, "netlists_equal": sum(c == "10000/10000" for c in checks),
    }


def _mark_front(table):
    """``pareto``: no other row has an accuracy at least as high and LUT6 at most as many (one strictly)."""
    costed = [r for r in table if r["lut6_mean"] is not None]
    for r in table:
        r["pareto"] = r in costed and not any(
            o is not r and o["accuracy_mean"] >= r["accuracy_mean"] and o["lut6_mean"] <= r["lut6_mean"]
            and (o["accuracy_mean"] > r["accuracy_mean"] or o["lut6_mean"] < r["lut6_mean"]) for o in costed)
        r["meets_accuracy_target"] = len(r["accuracy"]) >= 3 and r["accuracy_mean"] >= TARGET
        r["meets_k6_target"] = (r["k"] == 6 and r["lut6"] != [] and max(r["lut6"]) <= LUT_BUDGET
                                and r["meets_accuracy_target"])


def markdown(table):
    """The rows as a markdown table (the front in bold)."""
    lines = ["| configuration | head | hidden | input code | K | scores | tables | accuracy (n) | LUT6 per seed "
             "| iCE40 LUT4 | netlist = Keras | Pareto |", "|---|---|---|---|---:|---|---|---|---|---|---|---|"]
    for r in table:
        spread = f" ± {r['accuracy_std']:.2f}" if r["accuracy_std"] is not None else ""
        accuracy = f"{r['accuracy_mean']:.2f}%{spread} ({len(r['accuracy'])})"
        name = f"**{r['config']}**" if r["pareto"] else r["config"]
        hidden = "-".join(map(str, r["hidden"])) if isinstance(r["hidden"], list) else f"{r['hidden']} ×2"
        lines.append(" | ".join([
            f"| {name}", r["head"], hidden, r["encoding"] or "", str(r["k"]), r["scores"], "yes" if r["tables"] else "",
            accuracy, ", ".join(f"{n:,}" for n in r["lut6"]) or "not run",
            ", ".join(f"{n:,}" for n in r["ice40_lut4"]) or "not run",
            f"{r['netlists_equal']} of {len(r['netlist_checks'])}" if r["netlist_checks"] else "not simulated",
            "yes" if r["pareto"] else "",
        ]) + " |")
    return "\n".join(lines) + "\n"


def main():
    with open(os.path.join(RESULTS, "lut_accuracy.json")) as f:
        table = rows(json.load(f)["configs"])
    with open(os.path.join(RESULTS, "lut_pareto.json"), "w") as f:
        json.dump({"rows": table, "lut_budget_k6": LUT_BUDGET, "target_k6": TARGET,
                   "command": "python " + " ".join(sys.argv)}, f, indent=2)
    text = markdown(table)
    with open(os.path.join(RESULTS, "lut_pareto.md"), "w") as f:
        f.write(text)
    print(text)
    met = [r["config"] for r in table if r["meets_k6_target"]]
    print("K=6 target (<= 3,000 LUT6, >= 86.9% on 3 seeds):", ", ".join(met) or "not met by any row")
    met = [r["config"] for r in table if r["k"] == 8 and r["meets_accuracy_target"]]
    print("K=8 target (>= 86.9% on 3 seeds, LUT6 as counted):", ", ".join(met) or "not met by any row")


if __name__ == "__main__":
    main()
