#!/usr/bin/env bash
# Bad input never crashes or hangs: each case below runs at -np 1 and -np 2 (config cases also
# at 3), must end within 60 s with the documented exit status, print exactly one error line
# naming the problem, and leave no checkpoint behind.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

synth good.h5 600 6 3 1
cat > good.ini <<'INI'
[model]
layers = 6, 8, 3
[data]
train = good.h5
[train]
epochs = 2
batch_size = 32
learning_rate = 0.1
[checkpoint]
dir = ck
INI

# expect STATUS NEEDLE NP ARGS...: run nnmpi, check the status and the one error line.
expect() {
  local want=$1 needle=$2 np=$3; shift 3
  rm -rf ck
  timeout 60 "$NNMPI_MPIEXEC" $NNMPI_NP_FLAG "$np" ${NNMPI_PREFLAGS:-} "$NNMPI_BIN" "$@" > out.log 2> err.log
  local rc=$? lines
  lines=$(grep -c "nnmpi: error:" err.log)
  if [ "$rc" -eq 124 ]; then fail "HANG (-np $np $*)"; return; fi
  if [ "$rc" -ne "$want" ] || [ "$lines" -ne 1 ] || ! grep -qF -- "$needle" err.log; then
    fail "-np $np $*: status $rc (want $want), $lines error lines, want \"$needle\" in:"; cat err.log >&2
    return
  fi
  compgen -G "ck/*" > /dev/null && [ "$want" -ne 5 ] && [ "$want" -ne 1 ] && fail "-np $np $*: wrote a checkpoint"
  pass "-np $np status $rc: $(grep 'nnmpi: error:' err.log)"
}

sed 's/epochs = 2/epochs = ten/' good.ini > bad.ini
sed 's/^\[train\]/[train]\nepoch = 3/' good.ini > unknown_key.ini
sed 's/^\[checkpoint\]/[optimizer]\nlr = 1\n[checkpoint]/' good.ini > unknown_section.ini
grep -v learning_rate good.ini > missing.ini
sed 's/layers = 6, 8, 3/layers = 7, 8, 3/' good.ini > features.ini
sed 's/layers = 6, 8, 3/layers = 6, 8, 4/' good.ini > classes.ini
sed 's/momentum/x/; s/learning_rate = 0.1/learning_rate = -1/' good.ini > range.ini
for np in 1 2 3; do
  expect 2 'bad.ini:6: [train] epochs: expected a positive integer, got "ten"' $np bad.ini
  expect 2 'unknown_key.ini:6: [train] epoch: unknown key' $np unknown_key.ini
  expect 2 'unknown_section.ini:10: [optimizer] lr: unknown section [optimizer]' $np unknown_section.ini
  expect 2 'missing.ini: [train] learning_rate: missing required key' $np missing.ini
  expect 2 'range.ini:8: [train] learning_rate: expected a positive number, got "-1"' $np range.ini
  expect 2 'features.ini:2: [model] layers: input size 7 does not match good.h5, which has 6 features' $np features.ini
  expect 2 'classes.ini:2: [model] layers: output size 4 does not match the 3 classes of good.h5' $np classes.ini
  expect 2 'no-such.ini: cannot open' $np no-such.ini
  expect 2 '--set [train] batch_size: expected a positive integer, got "x"' $np good.ini --set train.batch_size=x
  expect 2 'unknown option --frobnicate' $np good.ini --frobnicate
done
expect 2 '4 ranks but only 2 partitions' 4 good.ini --set data.partitions=2
expect 2 'batch_size = 1024 is larger than the training set allows' 2 good.ini --set train.batch_size=1024

# ---- data errors: status 3 ----
$PY - <<'PY'
import h5py, numpy as np
rng = np.random.default_rng(0)
X = rng.random((600, 6), dtype=np.float32); y = rng.integers(0, 3, 600).astype(np.int32)
def w(name, X=X, y=y, xname="X", yname="y"):
    with h5py.File(name, "w") as f:
        if X is not None: f[xname] = X
        if y is not None: f[yname] = y
w("noy.h5", y=None)
w("x1d.h5", X=X[:, 0])
w("count.h5", y=y[:599])
yb = y.copy(); yb[450] = 7; w("label.h5", y=yb)
yn = y.astype(np.int64); yn[500] = 2**40; w("hugelabel.h5", y=yn)
Xn = X.copy(); Xn[550, 2] = np.nan; w("nan.h5", X=Xn)
Xi = X.astype(np.float64); Xi[10, 1] = 1e300; w("inf.h5", X=Xi)
w("strings.h5", y=np.array([b"a"] * 600))
w("tiny.h5", X=X[:3], y=y[:3])
open("text.h5", "w").write("not hdf5\n")
data = open("good.h5", "rb").read(); open("truncated.h5", "wb").write(data[: len(data) // 2])
PY
for np in 1 2; do
  expect 3 'nope.h5: cannot open' $np good.ini --set data.train=nope.h5
  expect 3 'text.h5: not an HDF5 file' $np good.ini --set data.train=text.h5
  expect 3 'truncated.h5:' $np good.ini --set data.train=truncated.h5
  expect 3 'noy.h5: no dataset "y"' $np good.ini --set data.train=noy.h5
  expect 3 'good.h5: no dataset "Z"' $np good.ini --set data.features=Z
  expect 3 'x1d.h5: dataset X: expected 2 dimensions' $np good.ini --set data.train=x1d.h5
  expect 3 'count.h5: X has 600 rows but y has 599' $np good.ini --set data.train=count.h5
  expect 3 'label.h5: dataset y: label 7 at row 450 is outside 0..2' $np good.ini --set data.train=label.h5
  expect 3 'hugelabel.h5: dataset y: label 1099511627776 at row 500' $np good.ini --set data.train=hugelabel.h5
  expect 3 'nan.h5: dataset X: NaN at row 550, column 2' $np good.ini --set data.train=nan.h5
  expect 3 'inf.h5: dataset X: Inf at row 10, column 1' $np good.ini --set data.train=inf.h5
  expect 3 'strings.h5: dataset y: expected integer class ids or float targets' $np good.ini --set data.train=strings.h5
  expect 3 'label.h5: dataset y: label 7 at row 450' $np good.ini --set data.test=label.h5
done
expect 3 'tiny.h5: dataset X: 4 ranks but only 3 training samples' 4 good.ini --set data.train=tiny.h5 \
  --set train.batch_size=4 --set data.partitions=4
for np in 2 3; do  # the same checks through the POSIX reader
  expect 3 'label.h5: dataset y: label 7 at row 450 is outside 0..2' $np good.ini --set data.train=label.h5 --set data.reader=posix
  expect 3 'truncated.h5:' $np good.ini --set data.train=truncated.h5 --set data.reader=posix
  expect 3 'nan.h5: dataset X: NaN at row 550, column 2' $np good.ini --set data.train=nan.h5 --set data.memory_limit=4K \
    --set data.chunk_rows=16 --set data.partitions=4  # streamed: checked before training
done

# ---- runtime: status 5 on NaN/Inf in training, status 1 when replicas diverge ----
synth reg.h5 600 6 0 1 --targets 2
for np in 1 2; do  # linear regression with a far too large step diverges to Inf, then NaN
  expect 5 'hold NaN or Inf' $np good.ini --set data.train=reg.h5 --set model.layers=6,8,2 \
    --set model.output=linear --set model.loss=mse --set train.learning_rate=1000
done
# allreduce = shm: each rank checks its slice of the gradient and the verdict is shared
expect 5 'hold NaN or Inf' 3 good.ini --set data.train=reg.h5 --set model.layers=6,8,2 \
  --set model.output=linear --set model.loss=mse --set train.learning_rate=1000 --set train.allreduce=shm
# ... and across (test-hook) nodes of 2 ranks, where the verdicts also cross nodes
expect 5 'hold NaN or Inf' 4 good.ini --set data.train=reg.h5 --set model.layers=6,8,2 \
  --set model.output=linear --set model.loss=mse --set train.learning_rate=1000 --set train.allreduce=shm \
  --set debug.shm_node_ranks=2
# shm needs the same number of ranks on every node: 4 ranks as nodes of 3 and 1 is a config error
expect 2 'allreduce = shm needs the same number of ranks on every node' 4 good.ini --set train.allreduce=shm \
  --set debug.shm_node_ranks=3
# Ranks with private copies only: with shm the ranks of a node share one, which a perturbation
# would change for all of them.
expect 1 'ranks hold different weights' 2 good.ini --set debug.perturb_rank=1 --set train.allreduce=blocking
expect 4 'cannot create checkpoint directory' 2 good.ini --set checkpoint.dir=/proc/nnmpi-cannot
finish
