#!/usr/bin/env bash
# The same training at -np 1, 2, 3 and 4 (same seed, same global batch) ends with the same
# weights within 1e-5 relative, with shuffling on and off, for classification and regression.
# Each run also checks after every epoch that its ranks hold bit-identical weights
# ([debug] check_sync_every = 1, the default): a divergence fails the run.
. "$(dirname "$0")/lib.sh"

synth train.h5 1200 12 3 7
synth reg.h5 960 8 0 9 --targets 2

cat > cls.ini <<'INI'
[model]
layers = 12, 16, 8, 3
seed = 5
[data]
train = train.h5
partitions = 12
[train]
epochs = 3
batch_size = 48
learning_rate = 0.1
momentum = 0.5
INI
cat > reg.ini <<'INI'
[model]
layers = 8, 10, 2
activation = tanh
output = linear
loss = mse
[data]
train = reg.h5
partitions = 12
[train]
epochs = 3
batch_size = 24
learning_rate = 0.05
INI

for cfg in cls reg; do
  for shuffle in true false; do
    for np in 1 2 3 4; do
      dir="ck_${cfg}_${shuffle}_${np}"
      if ! run_np "$np" "$NNMPI_BIN" "$cfg.ini" --set data.shuffle=$shuffle --set checkpoint.dir="$dir" \
           --set checkpoint.every=0 > "$dir.log" 2>&1; then
        fail "$cfg shuffle=$shuffle -np $np exited non-zero"; cat "$dir.log"; continue
      fi
      grep -q "replicas diverged" "$dir.log" && fail "$cfg -np $np: replicas diverged"
      want="gradient sum: blocking: one MPI_Allreduce after backprop (auto: every layer's weights take under 8 MiB)"
      grep -qF "$want" "$dir.log" || fail "$cfg -np $np: auto did not pick what it should: $want"
      [ "$np" = 1 ] && continue
      if out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at "ck_${cfg}_${shuffle}_1" 3)" "$(ckpt_at "$dir" 3)" 1e-5); then
        pass "$cfg shuffle=$shuffle -np $np vs -np 1: $out"
      else
        fail "$cfg shuffle=$shuffle -np $np vs -np 1: $out"
      fi
    done
    # Shuffling must change the result compared with no shuffling (the flag is not ignored).
  done
  "$NNMPI_CKPT_DIFF" "$(ckpt_at "ck_${cfg}_true_1" 3)" "$(ckpt_at "ck_${cfg}_false_1" 3)" 1e-3 > /dev/null \
    && fail "$cfg: shuffle on and off gave the same weights"
done

# The runs above use the default reduction (auto: blocking, since no layer's weights take 8 MiB).
# Named explicitly, blocking, and the overlapped reduction (MPI_Iallreduce per gradient slice),
# give the same model too.
for mode in blocking overlap; do
  for np in 2 3; do
    dir="ck_${mode}_$np"
    run_np "$np" "$NNMPI_BIN" cls.ini --set train.allreduce=$mode --set checkpoint.dir="$dir" > "$dir.log" 2>&1 \
      || { fail "$mode -np $np exited non-zero"; cat "$dir.log"; continue; }
    grep -q "gradient sum: $mode" "$dir.log" || fail "$mode -np $np: the header names another reduction"
    out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at ck_cls_true_1 3)" "$(ckpt_at "$dir" 3)" 1e-5) \
      && pass "allreduce = $mode, -np $np vs -np 1: $out" || fail "$mode -np $np: $out"
  done
done

# The node computing as one (allreduce = shm, what auto picks from 2 ranks per node when a layer's
# weights take 8 MiB or more, split by units; named here for this small model: the ranks
# share one copy of the model and the node's batch, and split the forward pass and the deltas by
# rows or by units, then the gradient's rows) against blocking runs, at every rank count, both
# splits: with momentum, and with Adam and clipping tight enough to act on every step (its norm
# is summed over the ranks' ranges).
adam=(--set train.optimizer=adam --set train.learning_rate=0.01 --set train.clip_norm=0.05)
run_np 1 "$NNMPI_BIN" cls.ini "${adam[@]}" --set train.allreduce=blocking --set checkpoint.dir=ck_adam_1 > adam_1.log 2>&1 \
  || { fail "adam -np 1 exited non-zero"; cat adam_1.log; }
for split in rows units; do
  for np in 1 2 3 4; do
    for kind in momentum adam; do
      dir="ck_shm_${split}_${kind}_$np" ref=ck_blocking_2 extra=()
      [ "$kind" = adam ] && ref=ck_adam_1 extra=("${adam[@]}")
      run_np "$np" "$NNMPI_BIN" cls.ini "${extra[@]}" --set train.allreduce=shm --set train.node_split=$split \
        --set checkpoint.dir="$dir" > "$dir.log" 2>&1 || { fail "shm $split $kind -np $np exited non-zero"; cat "$dir.log"; continue; }
      grep -q "split by $split" "$dir.log" || fail "shm $split -np $np: the header names another split"
      out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at "$ref" 3)" "$(ckpt_at "$dir" 3)" 1e-5) \
        && pass "allreduce = shm by $split, $kind, -np $np vs blocking: $out" || fail "shm $split $kind -np $np: $out"
    done
  done
done
"$NNMPI_CKPT_DIFF" "$(ckpt_at ck_blocking_2 3)" "$(ckpt_at ck_adam_1 3)" 1e-3 > /dev/null \
  && fail "adam with clipping gave the same weights as momentum"

# shm across nodes, on one host: [debug] shm_node_ranks groups consecutive ranks as "nodes", so
# each slice is also summed across them with MPI_Allreduce (4 ranks as 2 nodes of 2, 3 as 3 of 1).
for layout in "4 2 rows" "3 1 rows" "4 2 units"; do
  read -r np per split <<< "$layout"
  for kind in momentum adam; do
    dir="ck_nodes_${kind}_${np}_${per}_$split" ref=ck_blocking_2 extra=()
    [ "$kind" = adam ] && ref=ck_adam_1 extra=("${adam[@]}")
    run_np "$np" "$NNMPI_BIN" cls.ini "${extra[@]}" --set train.allreduce=shm --set debug.shm_node_ranks="$per" \
      --set train.node_split=$split --set checkpoint.dir="$dir" > "$dir.log" 2>&1 \
      || { fail "shm $np ranks as nodes of $per exited non-zero"; cat "$dir.log"; continue; }
    grep -q "summed across nodes" "$dir.log" || fail "shm $np ranks as nodes of $per: not summed across nodes"
    out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at "$ref" 3)" "$(ckpt_at "$dir" 3)" 1e-5) \
      && pass "allreduce = shm by $split, $kind, $np ranks as nodes of $per vs blocking: $out" || fail "shm nodes $split $kind $np/$per: $out"
  done
done

# A different seed must give different weights (the comparison above can fail).
run_np 2 "$NNMPI_BIN" cls.ini --set model.seed=6 --set checkpoint.dir=ck_seed6 > seed6.log 2>&1 || fail "seed 6 run"
"$NNMPI_CKPT_DIFF" "$(ckpt_at ck_cls_true_1 3)" "$(ckpt_at ck_seed6 3)" 1e-5 > /dev/null \
  && fail "another seed gave the same weights"
finish
