#!/usr/bin/env bash
# Training quality features, end to end at several rank counts: every optimizer lowers the loss
# below a fixed bar; the validation hold-out and dropout do not depend on the rank count;
# early stopping keeps the best model; the final confusion matrix; the linear scaling rule;
# clipping is wired in; Adam's state survives a stop and resume bit for bit.
. "$(dirname "$0")/lib.sh"

synth all.h5 3000 20 4 21
"$NNMPI_DATA_BIN" split all.h5 train.h5 test.h5 --test-fraction 0.2 --seed 1 > /dev/null 2>&1 || fail "split"
cat > run.ini <<'INI'
[model]
layers = 20, 32, 4
seed = 3
[data]
train = train.h5
test = test.h5
partitions = 12
[train]
epochs = 8
batch_size = 48
learning_rate = 0.05
[checkpoint]
dir = ck
every = 0
INI
run_ok() { nn "$@" || { fail "run failed: $*"; cat err.log >&2; return 1; }; }

# ---- every optimizer, with a schedule, warmup, weight decay: the loss falls below 0.55 ----
run_ok 2 --set log.metrics=none.jsonl --set train.epochs=1 --set train.learning_rate=1e-6
start=$(json_field none.jsonl 1 train_loss)
for case in "sgd 0.05 0.9 constant" "nesterov 0.05 0.9 step" "adam 0.005 0 cosine" "adamw 0.005 0 cosine"; do
  read -r opt lr mom sched <<< "$case"
  run_ok 2 --set train.optimizer="$opt" --set train.learning_rate="$lr" --set train.momentum="$mom" \
    --set train.lr_schedule="$sched" --set train.warmup_epochs=1 --set train.lr_step_epochs=4 \
    --set train.weight_decay=1e-4 --set log.metrics="$opt.jsonl" || continue
  last=$(json_field "$opt.jsonl" 8 train_loss)
  less_than "$last" 0.55 && pass "$opt/$sched: train loss $start (untrained) -> $last < 0.55" \
    || fail "$opt/$sched: train loss $last >= 0.55"
done
lr_end=$(json_field adam.jsonl 8 lr); lr_mid=$(json_field adam.jsonl 4 lr)
less_than "$lr_end" "$lr_mid" && pass "cosine lr decays: $lr_mid -> $lr_end" || fail "cosine lr: $lr_mid -> $lr_end"
# 50 steps an epoch; warmup 1 epoch, then x0.1 every 4 epochs: epoch 5 ends at step 250, before the
# first decay (at step 251 = warmup + 200), epoch 6 after it.
[ "$(json_field nesterov.jsonl 5 lr)" = "0.05" ] && [ "$(json_field nesterov.jsonl 6 lr)" = "0.005" ] \
  && pass "step schedule: x0.1 after 4 epochs past the warmup" \
  || fail "step schedule lr: $(json_field nesterov.jsonl 5 lr) $(json_field nesterov.jsonl 6 lr)"

# ---- linear scaling rule: lr x batch / base_batch ----
run_ok 2 --set train.batch_size=96 --set train.scale_lr_with_batch=true --set train.base_batch=48 \
  --set train.epochs=1 --set log.metrics=scaled.jsonl
[ "$(json_field scaled.jsonl 1 lr)" = "0.1" ] && pass "scale_lr_with_batch: 0.05 x 96/48 = 0.1" \
  || fail "scaled lr: $(json_field scaled.jsonl 1 lr)"

# ---- clipping is applied: a tiny max norm slows training down ----
run_ok 2 --set train.clip_norm=0.001 --set log.metrics=clip.jsonl
less_than "$(json_field sgd.jsonl 8 train_loss)" "$(json_field clip.jsonl 8 train_loss)" \
  && pass "clip_norm = 0.001 trains slower ($(json_field clip.jsonl 8 train_loss))" || fail "clipping had no effect"

# ---- validation rows and dropout masks do not depend on the rank count ----
for np in 1 2 3; do
  run_ok "$np" --set data.validation_fraction=0.2 --set model.dropout=0.3 --set train.epochs=2 \
    --set log.metrics="val$np.jsonl" --set checkpoint.dir="ckv$np"
done
# the node computing as one draws each unit's mask for its slice of the units (split by units)
for np in 2 3; do
  run_ok "$np" --set data.validation_fraction=0.2 --set model.dropout=0.3 --set train.epochs=2 \
    --set train.allreduce=shm --set train.node_split=units --set log.metrics="valshm$np.jsonl" --set checkpoint.dir="ckvshm$np"
done
for np in 2 3 shm2 shm3; do
  out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at ckv1 2)" "$(ckpt_at "ckv$np" 2)" 1e-5) \
    && pass "dropout 0.3 + validation, -np $np vs 1: $out" || fail "dropout/validation -np $np: $out"
  a=$(json_field val1.jsonl 2 val_loss) b=$(json_field "val$np.jsonl" 2 val_loss)
  awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * a) }' \
    && pass "val_loss -np $np: $b (np 1: $a)" || fail "val_loss differs: $a vs $b"
done
run_ok 2 --set model.dropout=0.9 --set train.epochs=2 --set log.metrics=drop.jsonl
less_than "$(json_field sgd.jsonl 2 train_loss)" "$(json_field drop.jsonl 2 train_loss)" \
  && pass "dropout 0.9 changes training" || fail "dropout had no effect"

# ---- early stopping: patience 1 with a learning rate far too high stops early, keeps best.h5 ----
run_ok 2 --set data.validation_fraction=0.2 --set train.patience=2 --set train.epochs=60 \
  --set train.learning_rate=0.5 --set train.momentum=0.9 --set checkpoint.dir=ckes --set log.metrics=es.jsonl
lines=$(grep -c '"epoch"' es.jsonl)
if grep -q "^early stop after epoch" out.log && [ "$lines" -lt 60 ] && [ -e ckes/best.h5 ]; then
  best=$(sed -n 's/.*best: epoch \([0-9]*\).*/\1/p' out.log)
  pass "early stop after $lines epochs, best epoch $best in best.h5"
  "$NNMPI_CKPT_CHECK" ckes/best.h5 20,32,4 | grep -q "epoch $best + 0" || fail "best.h5 is not epoch $best"
else
  fail "no early stop ($lines epochs)"; tail -3 out.log >&2
fi

# ---- final confusion matrix: rows sum to the test set's class counts, diagonal / row = per class ----
if /usr/bin/python3 - sgd.jsonl test.h5 <<'PY'
import json, sys, h5py, numpy as np
final = [json.loads(l) for l in open(sys.argv[1]) if '"final"' in l]
assert len(final) == 1, "one final line"
m = np.array(final[0]["confusion_matrix"]); y = h5py.File(sys.argv[2])["y"][:]
assert (m.sum(axis=1) == np.bincount(y, minlength=4)).all(), "row sums"
assert abs(np.trace(m) / m.sum() - final[0]["accuracy"]) < 1e-6, "accuracy"
assert np.allclose(np.diag(m) / m.sum(axis=1), final[0]["per_class_accuracy"], atol=1e-5), "per class"
PY
then pass "confusion matrix consistent with the test labels"; else fail "confusion matrix"; fi

# ---- Adam's state is checkpointed: stop and resume gives the uninterrupted weights ----
run_ok 2 --set train.optimizer=adam --set train.learning_rate=0.005 --set checkpoint.dir=adam_ref
nn 2 --set train.optimizer=adam --set train.learning_rate=0.005 --set checkpoint.dir=adam_res \
  --set debug.signal_at_step=130 --resume auto
[ $? -eq 75 ] || fail "adam stop"
run_ok 2 --set train.optimizer=adam --set train.learning_rate=0.005 --set checkpoint.dir=adam_res --resume auto
out=$("$NNMPI_CKPT_DIFF" "$(ckpt_at adam_ref 8)" "$(ckpt_at adam_res 8)" 0) && pass "adam resume: $out" \
  || fail "adam resume: $out"
finish
