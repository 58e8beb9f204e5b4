#!/usr/bin/env python3
"""Turns criterion's results into Markdown tables.

Usage: python3 benches/scripts/report.py [CRITERION_DIR]
CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion (or ~/.cache/ticketing-target/criterion).

Reads every <group>/<function>/<value>/new/{benchmark,estimates}.json and prints:
- the contention matrix: per backend and strategy, time per batch of K claims on S seats and
  successful claims per second;
- every other benchmark: mean time per iteration.
"""
import json
import os
import sys
from pathlib import Path


def human(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def rate(per_second):
    if per_second >= 1e6:
        return f"{per_second / 1e6:.3g} M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.3g} k/s"
    return f"{per_second:.3g} /s"


def load(root):
    results = []
    for benchmark in root.rglob("new/benchmark.json"):
        estimates = benchmark.parent / "estimates.json"
        if not estimates.exists():
            continue
        meta = json.loads(benchmark.read_text())
        mean = json.loads(estimates.read_text())["mean"]["point_estimate"]
        elements = (meta.get("throughput") or {}).get("Elements")
        results.append((meta["group_id"], meta.get("function_id") or "", meta.get("value_str") or "", mean, elements))
    return sorted(results)


def main():
    default = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/ticketing-target")) / "criterion"
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    results = load(root)
    if not results:
        sys.exit(f"no criterion results under {root}")

    contention = [r for r in results if r[0].startswith("contention/")]
    if contention:
        print("| backend / strategy | seats S | tasks K | time per batch | successful claims/s |")
        print("|---|---:|---:|---:|---:|")
        key = lambda r: (r[0], int(r[1].split("=")[1]), int(r[2].split("=")[1]))
        for group, function, value, mean, elements in sorted(contention, key=key):
            claims = rate(elements / (mean / 1e9)) if elements else ""
            print(f"| {group.removeprefix('contention/')} | {function.split('=')[1]} | {value.split('=')[1]} | {human(mean)} | {claims} |")
        print()

    others = [r for r in results if not r[0].startswith("contention/")]
    if others:
        print("| benchmark | backend | mean time per iteration |")
        print("|---|---|---:|")
        for group, function, value, mean, _ in others:
            name = group if not function or function == group else f"{group}/{function}"
            print(f"| {name} | {value} | {human(mean)} |")


if __name__ == "__main__":
    main()
