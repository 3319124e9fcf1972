"""Weak-scaling table from bench/step/run.py results (--json) for several GPU counts.

    python3 bench/step/scaling_table.py runs/bench/scaling_1.json runs/bench/scaling_2.json ...

Per shape and GPU count: vitrain with and without the CUDA graph, PyTorch DDP (eager, under
torchrun), vitrain / DDP (vitrain's faster variant), and the weak-scaling efficiencies:
img/s on N GPUs / (N x img/s on one GPU), vitrain's faster variant against its faster one-GPU
variant, DDP against PyTorch eager on one GPU. All inputs should come from one machine.

The one-GPU runs use GPU 0, and the GPUs of one host differ by a few percent (docs/benchmarks.md).
With --solo (run.py --json outputs of vitrain alone on GPU 0, 1, ... in that order, as
scaling.sh writes them; give it after the per-count files), one more column: img/s on N GPUs /
the sum of GPUs 0..N-1 alone (empty where a GPU's file is missing).
"""
import argparse
import json
import sys
from pathlib import Path


def read(path):
    """A run.py --json file's results, or None (said on stderr) where it is missing or unreadable."""
    if not Path(path).is_file():  # that run failed (run.py said why)
        print(f"scaling_table: {path} is missing; its figures are left out", file=sys.stderr)
        return None
    try:
        return json.loads(Path(path).read_text())
    except ValueError as e:
        print(f"scaling_table: {path} is not run.py's JSON ({e}); its figures are left out", file=sys.stderr)
        return None


def load(paths):
    return [r for path in paths for r in (read(path) or [])]


def best_vitrain(results, shape):
    """vitrain's faster variant (with or without the graph) for one shape, or None."""
    rates = [r["img_per_s"] for r in results if r["shape"] == shape and r["impl"].startswith("vitrain")]
    return max(rates, default=None)


def table(results, solo=None):
    """solo: per GPU (index order), run.py results of vitrain alone on that GPU."""
    by_key = {(r["shape"], r["gpus"], r["impl"]): r["img_per_s"] for r in results}
    shapes = list(dict.fromkeys(r["shape"] for r in results))
    rows = ["| shape | GPUs | vitrain + graph | vitrain, no graph | PyTorch DDP (eager) | vitrain / DDP | "
            "efficiency vitrain | efficiency DDP |" + (" efficiency vitrain, against each GPU alone |" if solo else ""),
            "|---|---|---|---|---|---|---|---|" + ("---|" if solo else "")]

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
            row = (f"| {shape} | {gpus} | {fmt(graph, ',.0f')} | {fmt(eager, ',.0f')} | {fmt(torch, ',.0f')} | "
                   f"{fmt(ratio, '.2f')}{'x' if ratio else ''} | "
                   f"{fmt(eff_mine and 100 * eff_mine, '.1f')}{'%' if eff_mine else ''} | "
                   f"{fmt(eff_torch and 100 * eff_torch, '.1f')}{'%' if eff_torch else ''} |")
            if solo:
                alone = [best_vitrain(per_gpu, shape) for per_gpu in solo[:gpus]]
                eff_alone = None
                if mine and gpus > 1 and len(alone) == gpus and None not in alone:
                    eff_alone = mine / sum(alone)
                row += f" {fmt(eff_alone and 100 * eff_alone, '.1f')}{'%' if eff_alone else ''} |"
            rows.append(row)
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="bench/step/run.py --json outputs (one per GPU count)")
    p.add_argument("--solo", nargs="+", default=[],
                   help="run.py --json outputs of vitrain alone on GPU 0, 1, ... (in that order)")
    a = p.parse_args()
    solo = [read(path) or [] for path in a.solo]  # a missing GPU: no rate, so no sum over it
    print(table(load(a.json), solo))


if __name__ == "__main__":
    main()
