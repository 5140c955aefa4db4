#!/usr/bin/env bash
# Checkpoints and resume: a run stopped any number of times and resumed with --resume auto ends
# with the weights of the uninterrupted run (bit for bit at the same rank count, within 1e-5
# across rank counts); a signal to one rank stops all ranks with status 75 after a checkpoint;
# kill -9 of a rank never leaves a corrupt checkpoint under a final name; corrupt checkpoints
# are skipped; a full disk stops cleanly; shape changes are refused; keep and every_seconds.
. "$(dirname "$0")/lib.sh"
: "${NNMPI_CKPT_CHECK:?}"

synth data.h5 6000 16 4 3
cat > run.ini <<'INI'
[model]
layers = 16, 32, 4
activation = tanh
seed = 4
[data]
train = data.h5
partitions = 12
[train]
epochs = 4
batch_size = 48
learning_rate = 0.05
momentum = 0.9
[checkpoint]
dir = ref
keep = 0
INI
SIZES=16,32,4   # 6000 rows / 12 partitions / 4 rows each = 125 steps an epoch, 500 in all

expect_status() { # WANT WHAT NP ARGS...
  local want=$1 what=$2; shift 2
  nn "$@"; local rc=$?
  [ "$rc" -eq "$want" ] && return 0
  fail "$what: status $rc, want $want"; cat err.log >&2; return 1
}
# ranks_of PID: the nnmpi processes that the launcher PID (mpirun) started, and no one else's.
ranks_of() {
  local p
  for p in $(pgrep -P "$1"); do [ "$(cat /proc/"$p"/comm 2>/dev/null)" = nnmpi ] && echo "$p"; done
}
all_valid() { # DIR: every checkpoint under a final name reads back with valid checksums
  local f bad=0
  for f in "$1"/ckpt-e*-s*.h5; do [ -e "$f" ] || continue; "$NNMPI_CKPT_CHECK" "$f" "$SIZES" > /dev/null 2>> err.log || bad=1; done
  return $bad
}

expect_status 0 "uninterrupted run" 2 || finish
REF=$(ckpt_at ref 4)

# ---- 1. same rank count, stopped mid-epoch, at an epoch's end, and mid-epoch again ----
for s in 60 250 377; do
  expect_status 75 "stop at step $s" 2 --set checkpoint.dir=same --resume auto --set debug.signal_at_step=$s
  grep -q "stopped: stopped by a signal at .*step $s" err.log || fail "stop message at step $s: $(cat err.log)"
done
grep -q "resume: from same/ckpt-e0002-s000000250.h5: 2 epochs + 0 steps done" out.log || fail "resume report: $(grep resume out.log)"
expect_status 0 "final resume" 2 --set checkpoint.dir=same --resume auto
out=$("$NNMPI_CKPT_DIFF" "$REF" "$(ckpt_at same 4)" 0) && pass "3 stops, same -np 2: bit-identical ($out)" \
  || fail "resumed run differs at the same rank count: $out"

# ---- 2. a different rank count at every restart: 1 -> 3 -> 4 -> 2 ----
np_list=(1 3 4 2) stops=(100 200 444 0) i=0
for np in "${np_list[@]}"; do
  s=${stops[$i]}; i=$((i + 1))
  if [ "$s" -gt 0 ]; then expect_status 75 "-np $np stop at $s" "$np" --set checkpoint.dir=mixed --resume auto --set debug.signal_at_step=$s
  else expect_status 0 "-np $np final" "$np" --set checkpoint.dir=mixed --resume auto; fi
done
out=$("$NNMPI_CKPT_DIFF" "$REF" "$(ckpt_at mixed 4)" 1e-5) && pass "resumed at -np 1, 3, 4, 2: $out" \
  || fail "resumed across rank counts: $out"

# ---- 2b. allreduce = shm on one node (the runs above use auto, which is blocking for this
# small model): stops and resumes at -np 3, the signal on rank 2 reaching the others through the
# node's shared verdicts: bit-identical to the uninterrupted shm run, and within 1e-5 of the
# blocking one ----
for split in rows units; do
  shm=(--set train.allreduce=shm --set train.node_split=$split)
  expect_status 0 "uninterrupted shm $split run" 3 "${shm[@]}" --set checkpoint.dir="shm_${split}_ref"
  for s in 70 250; do
    expect_status 75 "shm $split stop at step $s" 3 "${shm[@]}" --set checkpoint.dir="shm_$split" --resume auto \
      --set debug.signal_at_step=$s --set debug.signal_rank=2
  done
  expect_status 0 "shm $split final resume" 3 "${shm[@]}" --set checkpoint.dir="shm_$split" --resume auto
  out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at "shm_${split}_ref" 4)" "$(ckpt_at "shm_$split" 4)" 0) \
    && pass "shm by $split: 2 stops at -np 3: bit-identical ($out)" || fail "shm $split resumed run differs: $out"
  out=$("$NNMPI_CKPT_DIFF" "$REF" "$(ckpt_at "shm_$split" 4)" 1e-5) && pass "shm by $split -np 3 vs blocking -np 2: $out" \
    || fail "shm $split against blocking: $out"
done
# across (test-hook) nodes: 4 ranks as 2 nodes of 2, the signal on the second node's rank 3
nodes=(--set train.allreduce=shm --set debug.shm_node_ranks=2)
expect_status 0 "uninterrupted shm run, 2 nodes" 4 "${nodes[@]}" --set checkpoint.dir=nodes_ref
expect_status 75 "shm stop at step 190, 2 nodes" 4 "${nodes[@]}" --set checkpoint.dir=nodes --resume auto \
  --set debug.signal_at_step=190 --set debug.signal_rank=3
expect_status 0 "shm final resume, 2 nodes" 4 "${nodes[@]}" --set checkpoint.dir=nodes --resume auto
out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at nodes_ref 4)" "$(ckpt_at nodes 4)" 0) \
  && pass "shm, 2 nodes of 2: stopped from the second node and resumed, bit-identical ($out)" \
  || fail "shm across nodes, resumed: $out"

# ---- 3. a real SIGTERM to one rank (not to mpirun): every rank stops at the same step ----
"$NNMPI_MPIEXEC" $NNMPI_NP_FLAG 3 ${NNMPI_PREFLAGS:-} "$NNMPI_BIN" run.ini --set checkpoint.dir=sig \
  --set train.epochs=100000 --set checkpoint.keep=2 > out.log 2> err.log &
launcher=$!
for _ in $(seq 100); do [ -n "$(ls sig 2>/dev/null)" ] && break; sleep 0.1; done
rank=""
for p in $(ranks_of "$launcher"); do rank=$p; done
if [ -z "$rank" ]; then fail "no rank process found"; else kill -TERM "$rank"; fi
( sleep 60; kill -9 "$launcher" 2>/dev/null ) & guard=$!
wait "$launcher"; rc=$?
kill "$guard" 2>/dev/null
if [ "$rc" -eq 75 ] && grep -q "stopped: stopped by a signal" err.log && all_valid sig; then
  pass "SIGTERM to one of 3 ranks: status 75, $(grep -c . <(ls sig)) checkpoints, all valid"
else
  fail "SIGTERM to one rank: status $rc"; cat err.log >&2
fi

# ---- 4. kill -9 of one rank at random moments, 8 times; then resume to the end ----
RANDOM=7
for round in 1 2 3 4 5 6 7 8; do
  "$NNMPI_MPIEXEC" $NNMPI_NP_FLAG 2 ${NNMPI_PREFLAGS:-} "$NNMPI_BIN" run.ini --set checkpoint.dir=killed \
    --set checkpoint.every_steps=3 --resume auto > out.log 2> err.log &
  launcher=$!
  sleep "0.$((RANDOM % 9 + 1))"
  mapfile -t victims < <(ranks_of "$launcher")
  [ ${#victims[@]} -gt 0 ] && kill -9 "${victims[$((RANDOM % ${#victims[@]}))]}" 2>/dev/null
  ( sleep 60; kill -9 "$launcher" 2>/dev/null ) & guard=$!
  wait "$launcher"
  kill "$guard" 2>/dev/null
  all_valid killed || fail "round $round: a checkpoint under a final name is invalid: $(tail -1 err.log)"
done
expect_status 0 "resume after the kills" 2 --set checkpoint.dir=killed --set checkpoint.every_steps=3 --resume auto
out=$("$NNMPI_CKPT_DIFF" "$REF" "$(ckpt_at killed 4)" 0) && pass "8 kill -9 rounds then resume: bit-identical ($out)" \
  || fail "after kill -9 rounds: $out"

# ---- 5. a truncated newest and a bit-flipped second-newest checkpoint are skipped ----
mapfile -t files < <(ls -r killed/ckpt-e*-s*.h5)
head -c 3000 "${files[0]}" > t.h5 && mv t.h5 "${files[0]}"
/usr/bin/python3 - "${files[1]}" <<'PY'
import sys, h5py, numpy as np
path = sys.argv[1]
with h5py.File(path, "r") as f:
    ds = f["/model/W1"]; off = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
data = bytearray(open(path, "rb").read()); data[off + 2] ^= 0x04; open(path, "wb").write(data)
PY
expect_status 0 "resume past corrupt checkpoints" 2 --set checkpoint.dir=killed --resume auto --set train.epochs=5
if grep -q "resume: skipping ${files[0]}: " out.log && grep -q "resume: skipping ${files[1]}: .*checksum" out.log \
   && grep -q "resume: from ${files[2]}" out.log; then pass "truncated and bit-flipped checkpoints skipped"
else fail "corrupt checkpoints not skipped as expected:"; grep resume out.log >&2; fi

# ---- 6. disk full (file size limit) while writing a checkpoint ----
expect_status 0 "2 epochs for the disk-full case" 2 --set checkpoint.dir=full --set train.epochs=2 \
  --set model.layers=16,512,4
before=$(ls full)
# The limit is set inside nnmpi once MPI is up: under `ulimit -f`, mpirun's own shared-memory
# files would hit it first. The write path sees what a full disk gives: write() fails.
nn 2 --set checkpoint.dir=full --resume auto --set model.layers=16,512,4 --set debug.file_size_limit=60000; rc=$?
if [ "$rc" -eq 4 ] && grep -q "cannot write checkpoint: File too large (earlier checkpoints are kept)" err.log \
   && [ "$(ls full)" = "$before" ] && "$NNMPI_CKPT_CHECK" "$(ckpt_at full 2)" 16,512,4 > /dev/null; then
  pass "file size limit: status 4, earlier checkpoints intact, no partial file"
else
  fail "disk full: status $rc, files: $(ls full | tr '\n' ' ')"; cat err.log >&2
fi

# ---- 7. resuming with another model shape or batch sequence is refused; lr and epochs may change ----
cp -r ref shape
expect_status 4 "shape change" 2 --set checkpoint.dir=shape --resume auto --set model.layers=16,64,4 --set train.epochs=5
grep -q "cannot resume: model.layers is 16, 32, 4 in the checkpoint but 16, 64, 4 here" err.log \
  && pass "shape change refused: $(cat err.log)" || { fail "shape change message"; cat err.log >&2; }
expect_status 4 "batch change" 2 --set checkpoint.dir=shape --resume auto --set train.batch_size=96 --set train.epochs=5
grep -q "train.batch_size is 48 in the checkpoint but 96 here" err.log && pass "batch_size change refused" \
  || { fail "batch change message"; cat err.log >&2; }
expect_status 0 "lr change" 2 --set checkpoint.dir=shape --resume auto --set train.learning_rate=0.01 --set train.epochs=5 \
  && pass "learning_rate and epochs may change on resume"

# ---- 8. keep, every_seconds ----
expect_status 0 "keep=2" 2 --set checkpoint.dir=keep2 --set checkpoint.keep=2
[ "$(ls keep2 | wc -l)" -eq 2 ] && pass "keep = 2 leaves 2 checkpoints" || fail "keep=2 left: $(ls keep2)"
# (every 5 ms: the whole 1000-step run can take under 20 ms on a quiet machine)
expect_status 0 "every_seconds" 2 --set checkpoint.dir=timed --set checkpoint.every_seconds=0.005 --set train.epochs=8 \
  --set checkpoint.every=0
mid=$(ls timed | sed -n 's/ckpt-e[0-9]*-s0*\([0-9]*\)\.h5/\1/p' | awk '$1 % 125 != 0' | wc -l)
[ "$mid" -ge 1 ] && pass "every_seconds wrote $mid mid-epoch checkpoints" || fail "every_seconds wrote none: $(ls timed)"
finish
