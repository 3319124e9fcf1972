"""bench/step/scaling_table.py against efficiencies and ratios computed by hand."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("scaling_table", ROOT / "bench/step/scaling_table.py")
scaling_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scaling_table)


def result(impl, gpus, img_per_s, shape="s"):
    return {"impl": impl, "shape": shape, "gpus": gpus, "img_per_s": img_per_s, "step_ms": 1.0}


def test_efficiency_and_ratio_by_hand(tmp_path):
    one = [result("vitrain", 1, 900.0), result("vitrain-cudagraph", 1, 1000.0), result("pytorch-eager", 1, 800.0)]
    four = [result("vitrain-nccl", 4, 3700.0), result("vitrain-nccl-cudagraph", 4, 3800.0),
            result("pytorch-eager-ddp", 4, 3040.0)]
    paths = []
    for name, rows in (("scaling_1.json", one), ("scaling_4.json", four)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(rows))
    lines = scaling_table.table(scaling_table.load(paths)).splitlines()
    assert lines[2] == "| s | 1 | 1,000 | 900 | 800 | 1.25x |  |  |"
    # 3800 / (4 x 1000) = 95.0%; 3040 / (4 x 800) = 95.0%; 3800 / 3040 = 1.25x.
    assert lines[3] == "| s | 4 | 3,800 | 3,700 | 3,040 | 1.25x | 95.0% | 95.0% |"


def test_missing_runs_leave_cells_empty():
    rows = [result("vitrain-cudagraph", 1, 1000.0), result("vitrain-nccl-cudagraph", 2, 1900.0)]
    lines = scaling_table.table(rows).splitlines()
    assert lines[2] == "| s | 1 | 1,000 |  |  |  |  |  |"
    assert lines[3] == "| s | 2 | 1,900 |  |  |  | 95.0% |  |"
