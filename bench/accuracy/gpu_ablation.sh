#!/usr/bin/env bash
# vitrain against the timm reference on one GPU, several variants at once (they share the GPU),
# to find which GPU-side difference costs accuracy. Linear head: the timm reference's zero-initialised
# (ref_timm_head: timm's init); vitrain's per HEAD_INIT (default auto = timm's init from scratch;
# HEAD_INIT=zero for the README table's "head zero" rows, which predate auto). The CIFAR-10
# pretraining recipe otherwise (configs/cifar10/pretrain.yaml).
#
#   bench/accuracy/gpu_ablation.sh CIFAR_DIR OUT_DIR [EPOCHS] [VARIANTS]
#
# CIFAR_DIR holds train/ and test/ (the JPEG copy, extracted). VARIANTS (comma-separated) from:
#   ref        timm + torch.compile (bench/accuracy/timm_reference.py)
#   ref_eager  timm, eager
#   ref_timm_head  timm + compile, linear head at timm's init (trunc normal 0.02) instead of zeros
#   ref_mlp    timm + compile, vitrain's pretraining head (pre_logits + tanh, then linear)
#   mlp        vitrain with model.head=mlp
#   auto       vitrain as configured (bf16 autocast, train.attention=auto)
#   flash | efficient | cudnn | math   vitrain with train.attention set to that kernel
#   fp32       vitrain with train.precision=fp32
#   stream     vitrain with data.device_resident=false (augmentation on the CPU workers)
# Prints one line per variant: test accuracy at the last epoch and at the middle one.
set -uo pipefail
cd "$(dirname "$0")/../.."
cifar=$1
out=$2
epochs=${3:-20}
variants=${4:-ref,auto,flash,fp32,stream}
vit_train=${VIT_TRAIN:-build/vit-train}
mkdir -p "$out"
common=(--config configs/cifar10/pretrain.yaml --set data.dataset=image_folder --set "data.path=$cifar/train"
        --set "data.eval_path=$cifar/test" --set "train.epochs=$epochs" --set model.head=linear
        --set checkpoint.every_steps=0 --set logging.tensorboard=false --set logging.progress=lines
        --set checkpoint.resume=false --set "model.head_init=${HEAD_INIT:-auto}")
pids=()
for v in ${variants//,/ }; do
  case $v in
    ref) cmd=(python3 bench/accuracy/timm_reference.py --train "$cifar/train" --test "$cifar/test" --device cuda
              --compile --epochs "$epochs" --head linear --linear-head-init zero) ;;
    ref_timm_head) cmd=(python3 bench/accuracy/timm_reference.py --train "$cifar/train" --test "$cifar/test"
                        --device cuda --compile --epochs "$epochs" --head linear --linear-head-init timm) ;;
    ref_mlp) cmd=(python3 bench/accuracy/timm_reference.py --train "$cifar/train" --test "$cifar/test" --device cuda
                  --compile --epochs "$epochs" --head mlp) ;;
    mlp) cmd=("$vit_train" "${common[@]}" --set "run.dir=$out/$v" --set model.head=mlp) ;;
    ref_eager) cmd=(python3 bench/accuracy/timm_reference.py --train "$cifar/train" --test "$cifar/test"
                    --device cuda --epochs "$epochs" --head linear --linear-head-init zero) ;;
    auto) cmd=("$vit_train" "${common[@]}" --set "run.dir=$out/$v") ;;
    flash|efficient|cudnn|math) cmd=("$vit_train" "${common[@]}" --set "run.dir=$out/$v" --set "train.attention=$v") ;;
    fp32) cmd=("$vit_train" "${common[@]}" --set "run.dir=$out/$v" --set train.precision=fp32) ;;
    stream) cmd=("$vit_train" "${common[@]}" --set "run.dir=$out/$v" --set data.device_resident=false) ;;
    *) echo "unknown variant '$v'" >&2; exit 2 ;;
  esac
  "${cmd[@]}" > "$out/$v.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for v in ${variants//,/ }; do
  python3 - "$out" "$v" "$epochs" <<'EOF'
import json, sys
from pathlib import Path
out, v, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
acc = {}
if v.startswith("ref"):
    for line in (out / f"{v}.log").read_text().splitlines():
        if line.startswith("{") and '"epoch"' in line:
            d = json.loads(line)
            acc[d["epoch"]] = d["accuracy"]
else:
    metrics = out / v / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            d = json.loads(line)
            if d.get("split") == "eval":
                acc[round(d["epochs"], 3)] = d["accuracy"]
last = acc.get(epochs) or (acc[max(acc)] if acc else None)
mid = acc.get(epochs // 2)
print(f"{v:10s} epoch {epochs // 2}: {mid}  epoch {epochs}: {last}  (all: {sorted(acc.items())[-4:]})")
EOF
done
exit $status
