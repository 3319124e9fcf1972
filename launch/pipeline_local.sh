#!/usr/bin/env bash
# The paper's two stages back to back on this machine: pretraining, then the fine-tune job that
# starts from the pretraining run's newest checkpoint (its config's model.init_from).
#   launch/pipeline_local.sh [-n NP] PRETRAIN.yaml FINETUNE.yaml [--set key=value ...]
# Extra --set flags go to both stages. Stops at the first stage that fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
np=1
usage="usage: launch/pipeline_local.sh [-n NP] PRETRAIN.yaml FINETUNE.yaml [--set key=value ...]"
if [ "${1:-}" = "-n" ]; then np=${2:?$usage}; shift 2; fi
pretrain=${1:?$usage} finetune=${2:?$usage}
shift 2
echo "== stage 1: pretraining ($pretrain)"
"$here/run_local.sh" -n "$np" --config "$pretrain" "$@"
echo "== stage 2: fine-tuning ($finetune)"
"$here/run_local.sh" -n "$np" --config "$finetune" "$@"
