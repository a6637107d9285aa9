#!/usr/bin/env bash
# The sample job's steps, for an environment where lfkit is installed (run_sample.sh sets one up;
# tests/test_sample_job.py runs this file as it is):
#   convert the bundled role-play sample -> build a tiny model -> train -> report.
# Usage: scripts/sample_job.sh [-v|--verbose] [OUT]   (default OUT: outputs/sample)
# Each step's full output goes to OUT/logs/; the screen gets a short summary of each step
# (-v shows the full output as well, LlamaFactory's log included).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VERBOSE=0
if [ "${1:-}" = "-v" ] || [ "${1:-}" = "--verbose" ]; then
    VERBOSE=1
    shift
fi
OUT="${1:-outputs/sample}"
LOGS="$OUT/logs"
rm -rf "$OUT"
mkdir -p "$LOGS"

# step LOG CMD...: run CMD with its output in LOG (and on screen with -v); on failure show its end.
step() {
    local log="$1"
    shift
    local status=0
    if [ "$VERBOSE" = 1 ]; then
        "$@" 2>&1 | tee "$log" || status=$?
    else
        "$@" >"$log" 2>&1 || status=$?
    fi
    if [ "$status" != 0 ]; then
        tail -n 30 "$log"
        echo "[lfkit] failed (exit status $status); full output: $log" >&2
        exit "$status"
    fi
}

echo "[lfkit] 1/4 converting the bundled role-play sample (at most 4 conversations per role)"
step "$LOGS/1-convert.log" lfkit data convert data_tools/samples/roleplay_sample.jsonl --out "$OUT/data" \
    --name roleplay --role-key user_id --max-per-role 4 --val-ratio 0.2 --seed 0
[ "$VERBOSE" = 1 ] || { grep -E "^converted .* = read|^rejects written to" "$LOGS/1-convert.log" || true; } | sed 's/^/  /'

echo "[lfkit] 2/4 building a tiny Qwen2 model and tokenizer locally (no model hub)"
step "$LOGS/2-tiny-model.log" lfkit tiny-model "$OUT/tiny-model" --corpus data_tools/samples/roleplay_sample.jsonl
[ "$VERBOSE" = 1 ] || tail -n 1 "$LOGS/2-tiny-model.log" | sed 's/^/  /'

echo "[lfkit] 3/4 training: llamafactory-cli train scripts/sample_cpu_lora.yaml (log: $LOGS/3-train.log)"
RUN="$OUT/saves/roleplay-lora"
train() {
    CUDA_VISIBLE_DEVICES="" HF_HUB_OFFLINE=1 llamafactory-cli train scripts/sample_cpu_lora.yaml \
        model_name_or_path="$OUT/tiny-model" dataset_dir="$OUT/data" output_dir="$RUN"
}
if [ "$VERBOSE" = 1 ]; then
    step "$LOGS/3-train.log" train
    lfkit follow "$RUN"
else
    train >"$LOGS/3-train.log" 2>&1 &
    trainer=$!
    lfkit follow "$RUN" --pid "$trainer"
    status=0
    wait "$trainer" || status=$?
    if [ "$status" != 0 ]; then
        tail -n 30 "$LOGS/3-train.log"
        echo "[lfkit] training failed (exit status $status); full log: $LOGS/3-train.log" >&2
        exit "$status"
    fi
fi

echo "[lfkit] 4/4 results report and loss curves"
step "$LOGS/4-report.log" lfkit results report "$OUT/saves" --out "$OUT/report.md" --plots-dir "$OUT/plots"
[ "$VERBOSE" = 1 ] || grep -v '^\s*$' "$LOGS/4-report.log" | tail -n 2 | sed 's/^/  /'

cat <<DONE

[lfkit] done. The tiny model has random weights, so its loss starts at the chance level above
  and a few steps move it only a little: this run shows the chain works (convert, train with
  the plugin, report), not that a model learns. A real run starts from a pretrained model, so
  its loss starts far below chance (a chat model already predicts most tokens) and the eval
  loss should fall and then level off; eval loss rising while train loss falls is overfitting.
Outputs:
  dataset + dataset_info.json   $OUT/data/   (rejected records: $OUT/data/roleplay.rejects.jsonl)
  tiny model                    $OUT/tiny-model/
  trained LoRA adapter + logs   $RUN/
  results report                $OUT/report.md
  loss curves                   $OUT/plots/
  full output of each step      $LOGS/
DONE
