"""bench/step/scaling_table.py and trace_breakdown.py against efficiencies, ratios and times computed by hand."""
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


def test_efficiency_against_each_gpu_alone_by_hand():
    rows = [result("vitrain-cudagraph", 1, 1000.0), result("vitrain-nccl-cudagraph", 2, 1900.0),
            result("vitrain-nccl", 4, 3600.0), result("vitrain-nccl-cudagraph", 4, 3700.0)]
    # Alone: GPU 0 1000 (graph; 950 without), GPU 1 980, GPU 2 960, GPU 3 1160.
    solo = [[result("vitrain", 1, 950.0), result("vitrain-cudagraph", 1, 1000.0)],
            [result("vitrain-cudagraph", 1, 980.0)], [result("vitrain-cudagraph", 1, 960.0)],
            [result("vitrain-cudagraph", 1, 1160.0)]]
    lines = scaling_table.table(rows, solo).splitlines()
    assert lines[0].endswith("| efficiency vitrain, against each GPU alone |")
    assert lines[2] == "| s | 1 | 1,000 |  |  |  |  |  |  |"
    # 1900 / (1000 + 980) = 96.0%; 3700 / (1000 + 980 + 960 + 1160) = 90.2% (against GPU 0: 92.5%).
    assert lines[3] == "| s | 2 | 1,900 |  |  |  | 95.0% |  | 96.0% |"
    assert lines[4] == "| s | 4 | 3,700 | 3,600 |  |  | 92.5% |  | 90.2% |"
    # Fewer solo files than GPUs, or one GPU's missing: the rows that need it stay empty.
    assert scaling_table.table(rows, solo[:2]).splitlines()[4].endswith("| 92.5% |  |  |")
    gap = scaling_table.table(rows, [solo[0], [], solo[2], solo[3]]).splitlines()
    assert gap[3].endswith("| 95.0% |  |  |") and gap[4].endswith("| 92.5% |  |  |")


def test_unreadable_result_files_are_left_out(tmp_path, capsys):
    good, truncated = tmp_path / "scaling_1.json", tmp_path / "scaling_2.json"
    good.write_text(json.dumps([result("vitrain-cudagraph", 1, 1000.0)]))
    truncated.write_text('[{"impl": ')
    rows = scaling_table.load([good, truncated, tmp_path / "scaling_4.json"])
    assert rows == [result("vitrain-cudagraph", 1, 1000.0)]
    err = capsys.readouterr().err
    assert "scaling_2.json is not run.py's JSON" in err and "scaling_4.json is missing" in err


def test_missing_runs_leave_cells_empty():
    rows = [result("vitrain-cudagraph", 1, 1000.0), result("vitrain-nccl-cudagraph", 2, 1900.0)]
    lines = scaling_table.table(rows).splitlines()
    assert lines[2] == "| s | 1 | 1,000 |  |  |  |  |  |"
    assert lines[3] == "| s | 2 | 1,900 |  |  |  | 95.0% |  |"


trace_spec = importlib.util.spec_from_file_location("trace_breakdown", ROOT / "bench/step/trace_breakdown.py")
trace_breakdown = importlib.util.module_from_spec(trace_spec)
trace_spec.loader.exec_module(trace_breakdown)


def kernel(name, ts, dur):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur}


def test_trace_breakdown_by_hand(tmp_path):
    # One step (steps=1): gemm 0-100 us, a copy inside it (10-20, on another stream), NCCL 50-130 us
    # (30 us of it after the gemm), gelu 140-160, a CPU op that must not count.
    events = [kernel("gemm", 0, 100), kernel("copy", 10, 10), kernel("ncclDevKernel_AllReduce", 50, 80),
              kernel("gelu", 140, 20), {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 500}]
    path = tmp_path / "profile_rank0.json"
    path.write_text(json.dumps({"traceEvents": events}))
    figures, by_name = trace_breakdown.breakdown(str(path), steps=1)
    assert figures["kernels"] == 4
    assert abs(figures["span"] - 0.160) < 1e-9  # 0 .. 160 us
    assert abs(figures["busy"] - 0.150) < 1e-9  # 0 .. 130 and 140 .. 160
    assert abs(figures["compute"] - 0.130) < 1e-9  # kernel time, the copy's included
    assert abs(figures["nccl"] - 0.080) < 1e-9
    assert abs(figures["nccl_alone"] - 0.030) < 1e-9  # 100 .. 130
    assert by_name == {"gemm": 0.1, "copy": 0.01, "gelu": 0.02}


def test_trace_comparison_lists_slower_kernels(tmp_path):
    one, four = tmp_path / "one.json", tmp_path / "four.json"
    one.write_text(json.dumps({"traceEvents": [kernel("gemm", 0, 100), kernel("gelu", 100, 50)]}))
    four.write_text(json.dumps({"traceEvents": [kernel("gemm", 0, 150), kernel("gelu_v2", 150, 40),
                                                kernel("ncclKernel", 0, 200)]}))
    text = trace_breakdown.report([str(one), str(four)], top=1)
    assert "+0.008 ms per step in all" in text  # (150 + 40) - (100 + 50) us over 5 steps
    assert "+0.010  0.020 -> 0.030  gemm" in text  # 150 - 100 us over 5 steps
    assert "-0.010  0.010 -> 0.000  gelu" in text  # renamed: gone from the first trace's names...
    assert "gelu_v2" not in text  # ...its +0.008 is neither the top gain nor a loss


def test_trace_breakdown_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "profile_rank0.json"
    bad.write_text('{"traceEvents": [')  # truncated
    try:
        trace_breakdown.breakdown(str(bad))
    except SystemExit as e:
        assert "profile_rank0.json" in str(e) and "not a readable Chrome trace" in str(e)
    else:
        raise AssertionError("a truncated trace was accepted")
