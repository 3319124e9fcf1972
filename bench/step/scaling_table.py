"""Weak-scaling table from bench/step/run.py results (--json) for several GPU counts.

    python3 bench/step/scaling_table.py runs/bench/scaling_1.json runs/bench/scaling_2.json ...

Per shape and GPU count: vitrain with and without the CUDA graph, PyTorch DDP (eager, under
torchrun), vitrain / DDP (vitrain's faster variant), and the weak-scaling efficiencies:
img/s on N GPUs / (N x img/s on one GPU), vitrain's faster variant against its faster one-GPU
variant, DDP against PyTorch eager on one GPU. All inputs should come from one machine.
"""
import argparse
import json
import sys
from pathlib import Path


def load(paths):
    results = []
    for path in paths:
        if not Path(path).is_file():  # that GPU count's run failed (run.py said why)
            print(f"scaling_table: {path} is missing; its rows are left out", file=sys.stderr)
            continue
        results += json.loads(Path(path).read_text())
    return results


def table(results):
    by_key = {(r["shape"], r["gpus"], r["impl"]): r["img_per_s"] for r in results}
    shapes = list(dict.fromkeys(r["shape"] for r in results))
    rows = ["| shape | GPUs | vitrain + graph | vitrain, no graph | PyTorch DDP (eager) | vitrain / DDP | "
            "efficiency vitrain | efficiency DDP |",
            "|---|---|---|---|---|---|---|---|"]

    def fmt(x, spec):
        return format(x, spec) if x is not None else ""

    for shape in shapes:
        base_mine = base_torch = None
        for gpus in sorted({r["gpus"] for r in results if r["shape"] == shape}):
            suffix = "-nccl" if gpus > 1 else ""
            graph = by_key.get((shape, gpus, f"vitrain{suffix}-cudagraph"))
            eager = by_key.get((shape, gpus, f"vitrain{suffix}"))
            torch = by_key.get((shape, gpus, "pytorch-eager-ddp" if gpus > 1 else "pytorch-eager"))
            mine = max((x for x in (graph, eager) if x is not None), default=None)
            if gpus == 1:
                base_mine, base_torch = mine, torch
            eff_mine = mine / (gpus * base_mine) if mine and base_mine and gpus > 1 else None
            eff_torch = torch / (gpus * base_torch) if torch and base_torch and gpus > 1 else None
            ratio = mine / torch if mine and torch else None
            rows.append(f"| {shape} | {gpus} | {fmt(graph, ',.0f')} | {fmt(eager, ',.0f')} | {fmt(torch, ',.0f')} | "
                        f"{fmt(ratio, '.2f')}{'x' if ratio else ''} | "
                        f"{fmt(eff_mine and 100 * eff_mine, '.1f')}{'%' if eff_mine else ''} | "
                        f"{fmt(eff_torch and 100 * eff_torch, '.1f')}{'%' if eff_torch else ''} |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="bench/step/run.py --json outputs (one per GPU count)")
    print(table(load(p.parse_args().json)))


if __name__ == "__main__":
    main()
