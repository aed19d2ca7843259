#!/bin/bash
# The benchmark of docs/plan.md ("Measured"): `nash plan` on a T5-base-shaped teacher, then a stand-in
# of its recommendation made by the real stages, benched against the teacher.
#
#   scripts/bench_plan.sh WORK_DIR            # the issue's workload: batch 8, beams 4, source 256, 64 new tokens
#   PLANFLAGS="--batch 8 --beams 4 --source-length 256 --new-tokens 64 --engine ctranslate2 --quantization int8" \
#     scripts/bench_plan.sh WORK_DIR          # on CTranslate2: the stand-in and the teacher are exported too
#   PLANFLAGS="--batch 2 --beams 4 --source-length 64 --new-tokens 16" \
#   BENCHFLAGS="--batch 2 --beams 4 --source-length 64 --fixed-length 16" scripts/bench_plan.sh WORK_DIR
#
# The teacher has random weights (T5 v1.0: d_model 768, 12 heads, d_ff 3072, 12 + 12 layers, vocabulary
# 32128) and the T5 tokenizer from $T5_VOCAB (default ../shared/data/t5-vocab). Run it on a quiet machine.
set -e
WORK=${1:?give a work directory}
VOCAB=${T5_VOCAB:-$(dirname "$0")/../../shared/data/t5-vocab}
PLANFLAGS=${PLANFLAGS:-"--batch 8 --beams 4 --source-length 256 --new-tokens 64"}
BENCHFLAGS=${BENCHFLAGS:-"--batch 8 --beams 4 --source-length 256 --fixed-length 64"}
NASH=${NASH:-nash}
PY=${PYTHON:-python}
mkdir -p "$WORK"
if [ ! -d "$WORK/teacher" ]; then
  $PY - "$WORK" "$VOCAB" <<'PYEOF'
import json, sys
import torch
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration
work, vocab = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
config = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
                  num_heads=12, feed_forward_proj="relu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
T5ForConditionalGeneration(config).eval().save_pretrained(f"{work}/teacher")
AutoTokenizer.from_pretrained(vocab).save_pretrained(f"{work}/teacher")
words = "the match ended two one after a late goal by the home side in front of a full stadium".split()
with open(f"{work}/synthetic.jsonl", "w") as f:
    for i in range(64):
        source = " ".join(words[(i + j) % len(words)] for j in range(40))
        f.write(json.dumps({"source": "summarize: " + source, "target": " ".join(words[i % 7: i % 7 + 6])}) + "\n")
PYEOF
fi
echo "load before plan: $(uptime)"
$NASH plan "$WORK/teacher" --speedup 3 $PLANFLAGS --threads 2 -o "$WORK/plan" --force --json > "$WORK/plan.json"
echo "load after plan: $(uptime)"
read -r K S <<< "$($PY -c "import json; r = json.load(open('$WORK/plan/plan.json'))['recommendation']; print(r['decoder_layers'], r['encoder_sparsity'])")"
rm -rf "$WORK/s1" "$WORK/s2" "$WORK/s3"
$NASH select-layers "$WORK/teacher" -o "$WORK/s1" --decoder-layers "$K" --json > /dev/null
STUDENT=$WORK/s1
if [ "$S" != "0.0" ]; then
  $NASH prune-encoder "$WORK/s1" --teacher "$WORK/teacher" --data "$WORK/synthetic.jsonl" --target-sparsity "$S" \
      --max-steps 3 --batch-size 2 --max-source-length 64 --max-target-length 16 -o "$WORK/s2" --json > /dev/null
  $NASH compact "$WORK/s2" -o "$WORK/s3" --json > /dev/null
  STUDENT=$WORK/s3
fi
BASELINE=$WORK/teacher
read -r ENGINE Q <<< "$($PY -c "import json; e = json.load(open('$WORK/plan/plan.json'))['engine']; print(e['engine'], e['quantization'])")"
if [ "$ENGINE" = "ctranslate2" ]; then
  # the plan chose the engine: the stand-in and the teacher are exported as nash export writes them
  rm -rf "$WORK/s-ct2" "$WORK/teacher-ct2"
  $NASH export "$STUDENT" -o "$WORK/s-ct2" --quantization "$Q" --json > /dev/null
  $NASH export "$WORK/teacher" -o "$WORK/teacher-ct2" --quantization "$Q" --json > /dev/null
  STUDENT=$WORK/s-ct2
  BASELINE=$WORK/teacher-ct2
fi
echo "load before bench: $(uptime)"
$NASH bench "$STUDENT" --baseline "$BASELINE" $BENCHFLAGS --threads 2 --repeats 3 --json > "$WORK/bench.json"
echo "load after bench: $(uptime)"
$PY - "$WORK" <<'PYEOF'
import json, sys
work = sys.argv[1]
plan = json.load(open(f"{work}/plan/plan.json"))
bench = json.load(open(f"{work}/bench.json"))
rec = plan["recommendation"]
speedup = next(m for m in bench["models"] if m["speedup"])["speedup"]
print(f"plan: {rec['label']} {rec['speedup']:.2f}x ({'confirmed' if rec.get('confirmed') else 'timed' if rec['timed'] else 'predicted'}); "
      f"{plan['budget']['used_s']:.0f} s of {60 * plan['budget']['minutes']:.0f}; teacher {plan['references']['engine']:.2f} s/call")
print(f"bench: {speedup['value']:.2f}x, per repeat {[round(r, 2) for r in speedup['ratios']]}; "
      f"{100 * (speedup['value'] / rec['speedup'] - 1):+.1f}% against the plan")
PYEOF
