#!/usr/bin/env bash
# Why does (or doesn't) the same-size student beat its hard-label control? Variations of experiment A
# (recipes/minilm-glue-kd.yaml), each a --set on the committed recipe. They share one run folder, so
# teachers, soft targets and controls are reused wherever only the student changes; each variation is a recipe
# version kept in RUN_DIR/reports/<hash>/, listed with `mtkd runs list` and compared (per-task deltas against the
# first label) with `mtkd runs compare`, also written to docs/results/sweep.json. Usage:
#   bash benchmarks/reproduction_sweep.sh [RUN_DIR] [LABEL...]     (default: runs/minilm-glue-kd-A, all labels)
set -euo pipefail
cd "$(dirname "$0")/.."
MTKD=${MTKD:-.venv/bin/mtkd}
RECIPE=recipes/minilm-glue-kd.yaml
OUT=${1:-runs/minilm-glue-kd-A}
shift || true
LABELS=${*:-strong-teachers strong-kl-t2 strong-alpha-0.8 strong-compression strong-alpha-0.8-5seeds kl-t2 strong-kl-t2-alpha-0.8}

# Stronger teachers: 3 epochs at twice the learning rate (MiniLM-L6 learns nothing on CoLA at 5e-5 in 2 epochs);
# the third member keeps its lower learning rate and higher dropout relative to the others.
STRONG=(
  --set 'teachers.members[0]={name: t-linear-s1-e3, seed: 1, training: {epochs: 3, lr: 1.0e-4}}'
  --set 'teachers.members[1]={name: t-san-s2-e3, seed: 2, heads: {rte: {type: san}, wnli: {type: san}}, training: {epochs: 3, lr: 1.0e-4}}'
  --set 'teachers.members[2]={name: t-lr6e5-drop-s3-e3, seed: 3, encoder: {dropout: 0.15}, training: {epochs: 3, lr: 6.0e-5}}'
)
KL_T2=(--set 'teachers.aggregation.temperature=2' --set 'student.objective.classification.soft={type: kl, temperature: 2}')
ALPHA_08=(--set 'student.objective.classification.alpha=0.8')
FIVE_SEEDS=(--set 'student.seeds=[11, 12, 13, 14, 15]')
SMALL=(--set 'student.encoder.num_layers=3' --set 'student.init_from_teacher=0')

VERSIONS=()
run() {
  local label=$1; shift
  local start=$SECONDS
  echo "== $label: $MTKD recipe run $RECIPE --output $OUT -q $*"
  "$MTKD" recipe run "$RECIPE" --output "$OUT" -q "$@"
  local hash
  hash=$("$MTKD" recipe show "$RECIPE" "$@" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["hash"])')
  VERSIONS+=("$OUT@$hash")
  echo "== $label: version $hash, $((SECONDS - start)) s"
}

for label in $LABELS; do
  case $label in
    strong-teachers)    run "$label" "${STRONG[@]}" ;;
    strong-kl-t2)       run "$label" "${STRONG[@]}" "${KL_T2[@]}" ;;
    strong-alpha-0.8)   run "$label" "${STRONG[@]}" "${ALPHA_08[@]}" ;;
    strong-compression) run "$label" "${STRONG[@]}" "${SMALL[@]}" ;;
    strong-alpha-0.8-5seeds) run "$label" "${STRONG[@]}" "${ALPHA_08[@]}" "${FIVE_SEEDS[@]}" ;;
    kl-t2)              run "$label" "${KL_T2[@]}" ;;
    strong-kl-t2-alpha-0.8) run "$label" "${STRONG[@]}" "${KL_T2[@]}" "${ALPHA_08[@]}" ;;
    *) echo "unknown label: $label" >&2; exit 2 ;;
  esac
done

"$MTKD" runs list "$OUT"
if [ ${#VERSIONS[@]} -ge 2 ]; then
  "$MTKD" runs compare "${VERSIONS[@]}"
  "$MTKD" runs compare "${VERSIONS[@]}" --json > docs/results/sweep.json
fi
