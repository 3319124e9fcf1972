#!/usr/bin/env python3
"""Where a step's GPU time goes, from vit-train's Kineto traces (logging.profile_step writes
run.dir/profile_rank<r>.json, 5 profiled steps): per step, the kernels' wall span, the time the
GPU ran any kernel (busy), compute kernels (everything but NCCL), NCCL kernels, and NCCL time not
overlapped by compute (the all-reduce tail). With several traces, each against the first: the net
change in compute time and the compute kernels (by name) that gained and lost the most. Run it
on a one-GPU trace and then each rank of a multi-GPU run to see what the all-reduces cost the
backward pass that overlaps them. Per-step figures divide by --steps; a trace window need not
hold whole steps, so they are averages.

  python3 bench/step/trace_breakdown.py runs/one/profile_rank0.json runs/four/profile_rank*.json
"""
import argparse
import collections
import json

STEPS = 5  # StepProfiler::kSteps


def kernels(path):
    try:
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"trace_breakdown: {path}: not a readable Chrome trace ({e}); "
                         "vit-train writes run.dir/profile_rank<r>.json with logging.profile_step") from e
    return sorted((e for e in events if e.get("cat") == "kernel" and e.get("ph") == "X"), key=lambda e: e["ts"])


def union_us(intervals):
    """Total length of the union of [start, end) intervals."""
    total, start, end = 0.0, None, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            if end is not None:
                total += end - start
            start, end = s, e
        else:
            end = max(end, e)
    return total + (end - start if end is not None else 0.0)


def is_nccl(name):
    return "nccl" in name.lower()


def breakdown(path, steps=STEPS):
    """(per-step figures in ms, compute time per kernel name in ms per step)."""
    ks = kernels(path)
    if not ks:
        raise SystemExit(f"{path}: no GPU kernels in the trace")
    nccl = [(k["ts"], k["ts"] + k["dur"]) for k in ks if is_nccl(k["name"])]
    compute = [(k["ts"], k["ts"] + k["dur"]) for k in ks if not is_nccl(k["name"])]
    span = max(k["ts"] + k["dur"] for k in ks) - ks[0]["ts"]
    busy, compute_busy = union_us(nccl + compute), union_us(compute)
    per_step = lambda us: us / steps / 1e3
    figures = {
        "kernels": len(ks) / steps,
        "span": per_step(span),
        "busy": per_step(busy),
        "compute": per_step(sum(e - s for s, e in compute)),
        "nccl": per_step(sum(e - s for s, e in nccl)),
        "nccl_alone": per_step(busy - compute_busy),
    }
    by_name = collections.Counter()
    for k in ks:
        if not is_nccl(k["name"]):
            by_name[k["name"]] += per_step(k["dur"])
    return figures, by_name


def report(paths, top=10, steps=STEPS):
    lines = ["| trace | kernels | span ms | GPU busy ms | compute ms | NCCL ms | NCCL alone ms |",
             "|---|---|---|---|---|---|---|"]
    results = [breakdown(p, steps) for p in paths]
    for path, (f, _) in zip(paths, results):
        lines.append(f"| {path} | {f['kernels']:.0f} | {f['span']:.2f} | {f['busy']:.2f} | {f['compute']:.2f} | "
                     f"{f['nccl']:.2f} | {f['nccl_alone']:.2f} |")
    base_figures, base = results[0]
    for path, (figures, by_name) in zip(paths[1:], results[1:]):
        lines.append(f"\ncompute kernels of {path} against {paths[0]}: "
                     f"{figures['compute'] - base_figures['compute']:+.3f} ms per step in all; by name:")
        names = set(base) | set(by_name)
        diffs = sorted(((by_name[n] - base[n], n) for n in names), reverse=True)
        shown = diffs[:top] + [d for d in diffs[::-1][:top] if d[0] < 0 and d not in diffs[:top]]
        for d, n in shown:  # the largest gains, then the largest losses (a renamed kernel shows as both)
            lines.append(f"  {d:+.3f}  {base[n]:.3f} -> {by_name[n]:.3f}  {n[:90]}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("traces", nargs="+", help="profile_rank<r>.json files; the first is the baseline")
    p.add_argument("--top", type=int, default=10, help="kernels listed each way per comparison")
    p.add_argument("--steps", type=int, default=STEPS, help="steps in each trace (vit-train profiles 5)")
    a = p.parse_args()
    print(report(a.traces, a.top, a.steps))


if __name__ == "__main__":
    main()
