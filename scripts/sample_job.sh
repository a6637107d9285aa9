#!/usr/bin/env bash
# The sample job's steps, for an environment where lfkit is installed (run_sample.sh sets one up;
# tests/test_sample_job.py runs this file as it is):
#   convert the bundled role-play sample -> build a tiny model -> train -> report.
# Usage: scripts/sample_job.sh [OUT]   (default outputs/sample, relative to the repository)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${1:-outputs/sample}"
rm -rf "$OUT"
mkdir -p "$OUT"

echo "[lfkit] 1/4 converting the bundled role-play sample (at most 4 conversations per role)"
lfkit data convert data_tools/samples/roleplay_sample.jsonl --out "$OUT/data" --name roleplay \
    --role-key user_id --max-per-role 4 --val-ratio 0.2 --seed 0

echo "[lfkit] 2/4 building a tiny Qwen2 model and tokenizer locally (no model hub)"
lfkit tiny-model "$OUT/tiny-model" --corpus data_tools/samples/roleplay_sample.jsonl

echo "[lfkit] 3/4 training: llamafactory-cli train scripts/sample_cpu_lora.yaml"
CUDA_VISIBLE_DEVICES="" HF_HUB_OFFLINE=1 llamafactory-cli train scripts/sample_cpu_lora.yaml \
    model_name_or_path="$OUT/tiny-model" dataset_dir="$OUT/data" output_dir="$OUT/saves/roleplay-lora"

echo "[lfkit] 4/4 results report and loss curves"
lfkit results report "$OUT/saves" --out "$OUT/report.md" --plots-dir "$OUT/plots"

cat <<DONE

[lfkit] done. Outputs:
  dataset + dataset_info.json   $OUT/data/   (rejected records: $OUT/data/roleplay.rejects.jsonl)
  tiny model                    $OUT/tiny-model/
  trained LoRA adapter + logs   $OUT/saves/roleplay-lora/
  results report                $OUT/report.md
  loss curves                   $OUT/plots/
DONE
