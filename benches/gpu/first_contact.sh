#!/usr/bin/env bash
# First contact with a GPU: the one command to run on the GPU machine, from the repository root,
# with the bundle benches/gpu/prepare.sh built (target/gpu-bundle) taken along:
#
#   bash benches/gpu/first_contact.sh OUTDIR            # preflight, GPU tests, headline, sweep (540 s)
#   bash benches/gpu/first_contact.sh --tune OUTDIR     # tune the headline shapes (240 s)
#
# Options (passed to first_contact.py): --budget-s S, --bundle DIR, --backend cuda|sim,
# --phases LIST, --seed N, --work DIR (default: a new temporary folder). PYTHON picks the
# interpreter (default python3: the one with torch).
#
# OUTDIR receives exactly two files: first-contact.md (the summary) and first-contact.tar.gz
# (everything), or first-contact-tune.{md,tar.gz}. first_contact.py keeps its own budget; this
# wrapper is the last line of defence: it kills it HARD_LIMIT_GRACE_S after the budget and, if the
# summary or the archive is missing then, writes them itself from what the work folder holds.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
HARD_LIMIT_GRACE_S=10
KILL_AFTER_S=5

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
}

out=""
work=""
budget=""
tune=0
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage ;;
    --tune) tune=1; args+=("$1") ;;
    --budget-s) budget="${2:-}"; args+=("$1" "${2:-}"); shift ;;
    --work) work="${2:-}"; shift ;;
    --bundle | --backend | --phases | --seed | --python) args+=("$1" "${2:-}"); shift ;;
    -*) echo "first_contact.sh: unknown option $1" >&2; usage ;;
    *)
      if [[ -n "$out" ]]; then echo "first_contact.sh: one OUTDIR only" >&2; usage; fi
      out="$1"
      ;;
  esac
  shift
done
[[ -n "$out" ]] || usage
if [[ -z "$budget" ]]; then
  budget=$([[ $tune == 1 ]] && echo 240 || echo 540)
fi
if ! [[ "$budget" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
  echo "first_contact.sh: --budget-s must be a number of seconds, got '$budget'" >&2
  exit 2
fi
name=$([[ $tune == 1 ]] && echo first-contact-tune || echo first-contact)
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
if [[ -z "$work" ]]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/tessera-$name.XXXXXX")" || exit 2
fi
mkdir -p "$work" || exit 2
rm -f "$out/$name.md" "$out/$name.tar.gz"

limit=$(( ${budget%.*} + HARD_LIMIT_GRACE_S ))
# The runner notes the process group of the step it is running here (see budget.py).
export TESSERA_STEP_PIDFILE="$work/.step.pid"
timeout --kill-after="$KILL_AFTER_S" "$limit" \
  "$python" "$here/first_contact.py" "$out" --work "$work" --python "$python" "${args[@]}" \
  2> >(tee "$work/orchestrator-stderr.log" >&2)
status=$?

if [[ -s "$TESSERA_STEP_PIDFILE" ]]; then
  # The runner was killed in the middle of a step: stop that step's process group too.
  kill -KILL -- "-$(head -c 32 "$TESSERA_STEP_PIDFILE" | tr -cd 0-9)" 2>/dev/null
  rm -f "$TESSERA_STEP_PIDFILE"
fi
if [[ ! -s "$out/$name.md" || ! -s "$out/$name.tar.gz" ]]; then
  # The orchestrator died or was killed before it finished: say so, and keep what it left.
  {
    echo "# Tessera first contact: the orchestrator did not finish (exit $status)"
    echo
    echo "first_contact.py ended with status $status (124/137: killed at the ${limit} s hard limit)"
    echo "before writing its summary. The archive holds the work folder as it was: run.json lists the"
    echo "steps that ended, each step's log is beside it."
    echo
    echo "Last lines of its standard error:"
    echo
    echo '```'
    tail -n 20 "$work/orchestrator-stderr.log" 2>/dev/null
    echo '```'
  } > "$work/summary.md"
  cp "$work/summary.md" "$out/$name.md"
  tar -czf "$out/$name.tar.gz" -C "$(dirname "$work")" --transform "s|^$(basename "$work")|$name|" \
    "$(basename "$work")" 2>/dev/null || tar -czf "$out/$name.tar.gz" -C "$work" .
  [[ $status == 0 ]] && status=2
fi
echo "first_contact.sh: exit $status; $out/$name.md and $out/$name.tar.gz"
exit "$status"
