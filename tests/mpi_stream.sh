#!/usr/bin/env bash
# Streaming a shard larger than [data] memory_limit: the same weights as in memory (shuffle on
# and off, -np 1, 2, 3), bit for bit, since the visiting order is the same chunked order; a
# streamed run stopped mid-epoch resumes bit-identically; a limit too small is a config error.
. "$(dirname "$0")/lib.sh"

synth data.h5 12000 32 4 5
cat > run.ini <<'INI'
[model]
layers = 32, 48, 4
[data]
train = data.h5
partitions = 12
chunk_rows = 64
[train]
epochs = 2
batch_size = 48
learning_rate = 0.05
momentum = 0.9
[checkpoint]
dir = ck
INI
# 12000 rows x (32 + 1) floats = 1.5 MiB; 400 KiB makes every rank stream at -np 1, 2 and 3.
for shuffle in true false; do
  for np in 1 2 3; do
    nn "$np" --set data.shuffle=$shuffle --set checkpoint.dir="mem_${shuffle}_$np" || { fail "in-memory -np $np"; cat err.log >&2; continue; }
    nn "$np" --set data.shuffle=$shuffle --set checkpoint.dir="str_${shuffle}_$np" --set data.memory_limit=400K \
      || { fail "streaming -np $np"; cat err.log >&2; continue; }
    grep -q "^streaming: " out.log || fail "-np $np did not stream"
    out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at "mem_${shuffle}_$np" 2)" "$(ckpt_at "str_${shuffle}_$np" 2)" 0) \
      && pass "shuffle=$shuffle -np $np: streaming = in memory ($out)" || fail "shuffle=$shuffle -np $np: $out"
  done
done
# the node computing as one (allreduce = shm) streams into the node's shared batch: the same
# weights as its in-memory run, bit for bit, and as blocking to float rounding
for np in 2 3; do
  shm=(--set train.allreduce=shm --set train.node_split=units)
  nn "$np" "${shm[@]}" --set checkpoint.dir="memshm_$np" || { fail "shm in memory -np $np"; continue; }
  nn "$np" "${shm[@]}" --set checkpoint.dir="strshm_$np" --set data.memory_limit=400K || { fail "shm streaming -np $np"; continue; }
  grep -q "^streaming: " out.log || fail "shm -np $np did not stream"
  out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at "memshm_$np" 2)" "$(ckpt_at "strshm_$np" 2)" 0) \
    && pass "shm -np $np: streaming = in memory ($out)" || fail "shm -np $np streaming: $out"
  out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at "mem_true_$np" 2)" "$(ckpt_at "strshm_$np" 2)" 1e-5) \
    && pass "shm -np $np streamed vs blocking: $out" || fail "shm -np $np vs blocking: $out"
done
grep -q "(waiting " out.log && pass "the epoch line reports the time waiting on the stream" || fail "no waiting time"

# the POSIX reader loads the same rows as collective MPI-IO
for np in 2 3; do
  nn "$np" --set checkpoint.dir="posix_$np" --set data.reader=posix || { fail "posix reader -np $np"; continue; }
  out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at "mem_true_$np" 2)" "$(ckpt_at "posix_$np" 2)" 0) \
    && pass "reader = posix, -np $np: same weights as mpio" || fail "posix reader -np $np: $out"
done

# stop mid-epoch and resume while streaming
nn 2 --set checkpoint.dir=res --set data.memory_limit=400K --set debug.signal_at_step=300 --resume auto
[ $? -eq 75 ] || fail "streaming stop at step 300"
nn 2 --set checkpoint.dir=res --set data.memory_limit=400K --resume auto || fail "streaming resume"
out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at mem_true_2 2)" "$(ckpt_at res 2)" 0) && pass "streaming stop + resume: $out" \
  || fail "streaming resume: $out"

# too little memory for 3 chunks per partition: a config error naming the key, on every rank
nn 2 --set data.memory_limit=20K; rc=$?
[ "$rc" -eq 2 ] && grep -q "\[data\] memory_limit: 20480 bytes is too small" err.log && pass "limit too small: status 2" \
  || { fail "limit too small: status $rc"; cat err.log >&2; }
finish
