#!/usr/bin/env bash
# The main job on the bundled sample, from nothing: create the environment, install lfkit,
# convert the bundled role-play sample with per-role sampling, build a tiny model locally,
# train it for a few steps with plain `llamafactory-cli train`, then report and plot the run.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$REPO"
OUT=outputs/sample
rm -rf "$OUT"
mkdir -p "$OUT"

echo "[lfkit] 1/4 converting the bundled role-play sample (at most 4 conversations per role)"
lfkit data convert data_tools/samples/roleplay_sample.jsonl --out "$OUT/data" --name roleplay \
    --role-key user_id --max-per-role 4 --val-ratio 0.2 --seed 0

echo "[lfkit] 2/4 building a tiny Qwen2 model and tokenizer locally (no model hub)"
lfkit tiny-model "$OUT/tiny-model" --corpus data_tools/samples/roleplay_sample.jsonl

echo "[lfkit] 3/4 training: llamafactory-cli train scripts/sample_cpu_lora.yaml"
CUDA_VISIBLE_DEVICES="" HF_HUB_OFFLINE=1 llamafactory-cli train scripts/sample_cpu_lora.yaml

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
