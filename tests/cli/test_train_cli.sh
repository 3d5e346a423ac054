#!/usr/bin/env bash
# End-to-end test of `ls-train train` on a corpus this script writes (200 aligned lines):
#   1. a fresh run of 20 updates with a tiny model: exit 0, a loss in the log, the checkpoint,
#      tokenizer and run file on disk, num_updates 20 in the --json summary;
#   2. --resume up to 25 updates: starts at update 20 and ends at 25;
#   3. --resume that changes a model option is a usage error (exit 2);
#   4. an unknown option exits 2 naming it; a missing source file exits 1 naming the file;
#   5. `ls-train plan --layer-norm-backward-from-output` plans fewer bytes for a pre-LN
#      (transformer-tiny) and a post-LN (transformer-base) preset, and says so in --json; with
#      --recompute-layer-norm it is a usage error (exit 2); --no-recompute-layer-norm plans more
#      for the pre-LN preset (the recompute is the default) and says so in --json;
#   6. `ls-train train --gemm-autotune` on the CPU (which ignores it) runs and exits 0.
# Usage: test_train_cli.sh <build-dir>   (LS_TRAIN_BIN overrides <build-dir>/ls-train)
set -u

build_dir=${1:?usage: test_train_cli.sh <build-dir>}
bin=${LS_TRAIN_BIN:-$build_dir/ls-train}
[ -x "$bin" ] || { echo "FAIL: no executable $bin"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ls_train_cli.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# The integer value of "key" in a one-line JSON object.
json_int() { grep -o "\"$1\":[0-9-]*" "$2" | head -n1 | cut -d: -f2; }

# A toy English->German corpus: word-by-word translations with a running number, so every
# line is distinct.
en=(the a house cat dog small big red green is was file open save close window new old)
de=(das ein Haus Katze Hund klein groß rot grün ist war Datei öffnen speichern schließen Fenster neu alt)
for ((i = 0; i < 200; ++i)); do
  s="" t=""
  for ((k = 0; k < 2 + i % 6; ++k)); do
    w=$(((i * 7 + k * 5 + i / 18) % ${#en[@]}))
    s+="${en[$w]} " t+="${de[$w]} "
  done
  echo "$s$i" >>"$work/train.en"
  echo "$t$i" >>"$work/train.de"
done

tiny=(--source-file "$work/train.en" --target-file "$work/train.de" --vocab-size 300
      --arch transformer-tiny --encoder-layers 1 --decoder-layers 1 --embed-dim 32
      --ffn-embed-dim 64 --attention-heads 2 --max-tokens 256 --max-len 32 --lr 3e-3
      --warmup-updates 10 --validate-interval 10 --log-interval 5 --device cpu
      --save-dir "$work/ck")

# 1. A fresh run.
"$bin" train "${tiny[@]}" --max-updates 20 --json >"$work/run1.json" 2>"$work/run1.log"
rc=$?
[ $rc -eq 0 ] || fail "fresh run exited $rc: $(tail -n 5 "$work/run1.log")"
grep -Eq '\| loss [0-9]+\.[0-9]+ \|' "$work/run1.log" || fail "no training loss in the log"
grep -Eq '^valid .*loss [0-9]+\.[0-9]+' "$work/run1.log" || fail "no validation loss in the log"
grep -q 'BLEU = ' "$work/run1.log" || fail "no test BLEU in the log"
for f in checkpoint_last.lsck tokenizer.bpe train_config.txt; do
  [ -s "$work/ck/$f" ] || fail "$f was not written"
done
[ "$(json_int num_updates "$work/run1.json")" = 20 ] || fail "fresh run: num_updates is not 20: $(cat "$work/run1.json")"

# 2. Resume to 25 updates: the count continues from the checkpoint.
"$bin" train --resume --save-dir "$work/ck" --max-updates 25 --json >"$work/run2.json" 2>"$work/run2.log"
rc=$?
[ $rc -eq 0 ] || fail "resumed run exited $rc: $(tail -n 5 "$work/run2.log")"
[ "$(json_int start_update "$work/run2.json")" = 20 ] || fail "resumed run did not start at update 20: $(cat "$work/run2.json")"
[ "$(json_int num_updates "$work/run2.json")" = 25 ] || fail "resumed run did not end at update 25: $(cat "$work/run2.json")"
grep -q '"resumed":true' "$work/run2.json" || fail "resumed run does not say so in --json"
grep -q 'state.num-updates 25' "$work/ck/train_config.txt" || fail "run file does not record update 25"

# 3. A resumed run may not change the model's shape.
"$bin" train --resume --save-dir "$work/ck" --embed-dim 64 --max-updates 30 >"$work/run3.out" 2>&1
rc=$?
[ $rc -eq 2 ] || fail "--resume with another --embed-dim exited $rc, not 2"
grep -q -- '--embed-dim cannot change on --resume' "$work/run3.out" || fail "no message for the changed --embed-dim: $(cat "$work/run3.out")"

# 4. Usage and data errors.
"$bin" train --no-such-option 3 >"$work/bad.out" 2>&1
rc=$?
[ $rc -eq 2 ] || fail "an unknown option exited $rc, not 2"
grep -q -- '--no-such-option' "$work/bad.out" || fail "the unknown option is not named: $(cat "$work/bad.out")"
"$bin" train --source-file "$work/missing.en" --target-file "$work/train.de" --save-dir "$work/ck2" \
  --device cpu >"$work/missing.out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "a missing source file exited $rc, not 1"
grep -q 'missing.en' "$work/missing.out" || fail "the missing file is not named: $(cat "$work/missing.out")"

# 5. plan --layer-norm-backward-from-output: less planned memory, pre- and post-LN.
# plan_pair NAME PRESET FLAG FIELD: plans PRESET without and with FLAG (JSON), checks that FIELD
# reads true in the one and false in the other, and leaves their planned_bytes in
# $plain_bytes / $flag_bytes.
plan_pair() {
  local name=$1 preset=$2 flag=$3 field=$4 plain="$work/plan_$1_plain.json" with="$work/plan_$1_flag.json"
  "$bin" plan --preset "$preset" --device cpu --json >"$plain" 2>&1 \
    || fail "plan --preset $preset exited $?: $(cat "$plain")"
  "$bin" plan --preset "$preset" --device cpu --json "$flag" >"$with" 2>&1 \
    || fail "plan --preset $preset $flag exited $?: $(cat "$with")"
  local on=true off=false
  [ "$flag" = --no-recompute-layer-norm ] && on=false off=true
  grep -q "\"$field\":$on" "$with" || fail "plan $flag --json does not report $field $on: $(cat "$with")"
  grep -q "\"$field\":$off" "$plain" || fail "plan --json does not report $field $off: $(cat "$plain")"
  plain_bytes=$(json_int planned_bytes "$plain") flag_bytes=$(json_int planned_bytes "$with")
  [ -n "$plain_bytes" ] && [ -n "$flag_bytes" ] || fail "plan --json has no planned_bytes"
}
for preset in transformer-tiny transformer-base; do
  plan_pair "from_output_$preset" "$preset" --layer-norm-backward-from-output layer_norm_backward_from_output
  [ "$flag_bytes" -lt "$plain_bytes" ] \
    || fail "$preset: --layer-norm-backward-from-output planned $flag_bytes bytes, not fewer than $plain_bytes"
done
"$bin" plan --recompute-layer-norm --layer-norm-backward-from-output >"$work/plan_both.out" 2>&1
rc=$?
[ $rc -eq 2 ] || fail "plan with --recompute-layer-norm and --layer-norm-backward-from-output exited $rc, not 2"
grep -q -- '--layer-norm-backward-from-output' "$work/plan_both.out" || fail "the conflicting flags are not named: $(cat "$work/plan_both.out")"
# recompute_layer_norm is the default for pre-LN (transformer-tiny): --no-recompute-layer-norm
# turns it off and plans more.
plan_pair keep transformer-tiny --no-recompute-layer-norm recompute_layer_norm
[ "$flag_bytes" -gt "$plain_bytes" ] \
  || fail "--no-recompute-layer-norm planned $flag_bytes bytes, not more than the default's $plain_bytes"

# 6. train --gemm-autotune: accepted, and ignored on the CPU (a save dir of its own).
autotune=("${tiny[@]}")
autotune[${#autotune[@]} - 1]="$work/ck_autotune"
"$bin" train "${autotune[@]}" --max-updates 5 --gemm-autotune --json >"$work/run6.json" 2>"$work/run6.log"
rc=$?
[ $rc -eq 0 ] || fail "train --gemm-autotune exited $rc: $(tail -n 5 "$work/run6.log")"
[ "$(json_int num_updates "$work/run6.json")" = 5 ] || fail "train --gemm-autotune: num_updates is not 5: $(cat "$work/run6.json")"

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "ok: ls-train train fresh run, resume, usage and data errors; plan --layer-norm-backward-from-output; train --gemm-autotune"
