# shellcheck shell=bash
# Shared by the MPI test scripts. Environment (set by CTest, see tests/CMakeLists.txt):
#   NNMPI_BIN, NNMPI_DATA_BIN, NNMPI_CKPT_DIFF: the programs under test
#   NNMPI_MPIEXEC, NNMPI_NP_FLAG, NNMPI_PREFLAGS: how to launch MPI jobs
#   NNMPI_SCRATCH: a directory of this test's own
set -uo pipefail
: "${NNMPI_BIN:?}" "${NNMPI_DATA_BIN:?}" "${NNMPI_MPIEXEC:?}" "${NNMPI_SCRATCH:?}"
rm -rf "$NNMPI_SCRATCH" && mkdir -p "$NNMPI_SCRATCH" && cd "$NNMPI_SCRATCH" || exit 1

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# run_np N PROGRAM ARGS...: launch PROGRAM on N ranks.
run_np() {
  local n=$1; shift
  # shellcheck disable=SC2086
  "$NNMPI_MPIEXEC" $NNMPI_NP_FLAG "$n" ${NNMPI_PREFLAGS:-} "$@"
}

# nn NP ARGS...: run nnmpi on run.ini (NN_CONFIG to change) on NP ranks, bounded in time;
# stdout to out.log, stderr to err.log; returns nnmpi's status (124 on a hang).
nn() {
  local np=$1; shift
  # shellcheck disable=SC2086
  timeout 120 "$NNMPI_MPIEXEC" $NNMPI_NP_FLAG "$np" ${NNMPI_PREFLAGS:-} "$NNMPI_BIN" "${NN_CONFIG:-run.ini}" "$@" \
    > out.log 2> err.log
}

# synth OUT.h5 SAMPLES FEATURES CLASSES SEED [more nnmpi-data synth flags]; CLASSES 0 for
# regression (pass --targets T).
synth() {
  local out=$1 n=$2 f=$3 c=$4 s=$5 classes=(); shift 5
  [ "$c" -gt 0 ] && classes=(--classes "$c")
  "$NNMPI_DATA_BIN" synth "$out" --samples "$n" --features "$f" "${classes[@]}" --seed "$s" "$@" \
    > /dev/null 2>&1 || { echo "synth $out failed" >&2; exit 1; }
}

# json_field FILE N KEY: a field of the N-th per-epoch line of a metrics file ("last" = the last
# one; the final confusion-matrix line does not count).
json_field() {
  local line
  if [ "$2" = last ]; then line=$(grep '"epoch"' "$1" | tail -n 1); else line=$(grep '"epoch"' "$1" | sed -n "$2p"); fi
  echo "$line" | sed -n "s/.*\"$3\":\([^,}]*\).*/\1/p"
}

# less_than A B: true when the number A < B.
less_than() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

finish() {
  if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
  echo "all checks passed"; exit 0
}

# ckpt_at DIR EPOCH: the path of the epoch-boundary checkpoint for EPOCH in DIR (empty if none).
ckpt_at() {
  local f
  for f in "$1"/ckpt-e"$(printf %04d "$2")"-s*.h5; do [ -e "$f" ] && echo "$f" && return 0; done
  return 1
}
