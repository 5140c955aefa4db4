#!/bin/bash
# End-to-end checks of nnmpi-data: every subcommand on small files this script makes, the
# error paths (message, exit status, no file left behind) and synth's rank-count independence.
# usage: data_tool_test.sh NNMPI_DATA MPIEXEC
# env:   NNMPI_MPIEXEC_NUMPROC_FLAG (default -n), NNMPI_MPIEXEC_PREFLAGS (split on spaces)
set -euo pipefail

TOOL=$(realpath "$1")
MPIEXEC=$2
NP_FLAG=${NNMPI_MPIEXEC_NUMPROC_FLAG:--n}
read -r -a PREFLAGS <<<"${NNMPI_MPIEXEC_PREFLAGS:-}"
PY=/usr/bin/python3 # Debian's interpreter: the one with numpy and h5py

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }

run_np() { # run_np NP ARGS...: the tool under mpiexec with NP ranks
  local np=$1
  shift
  "$MPIEXEC" "$NP_FLAG" "$np" "${PREFLAGS[@]}" "$TOOL" "$@"
}

# expect_error NAME PATTERN ARGS...: must exit non-zero with exactly one line on stderr, matching
# PATTERN
expect_error() {
  local name=$1 pattern=$2 status=0
  shift 2
  "$TOOL" "$@" >out.txt 2>err.txt || status=$?
  if [ "$status" -eq 0 ]; then
    fail "$name: exit status 0"
  elif ! grep -Eq "^nnmpi-data: .*$pattern" err.txt; then
    fail "$name: stderr lacks '$pattern': $(cat err.txt)"
  elif [ "$(wc -l <err.txt)" -ne 1 ]; then
    fail "$name: more than one line on stderr: $(cat err.txt)"
  else
    pass "$name (status $status: $(cat err.txt))"
  fi
}

# no_leftovers NAME FILE: FILE and any temporary of it must be absent
no_leftovers() {
  if compgen -G "$2*" >/dev/null; then fail "$1: left $(echo "$2"*)"; else pass "$1: nothing left"; fi
}

# py NAME CODE: a Python assertion block
py() {
  local name=$1
  if "$PY" -c "import sys, h5py, numpy as np
$2"; then pass "$name"; else fail "$name"; fi
}

# ---- usage ------------------------------------------------------------------------------
if "$TOOL" --help | grep -q "import-idx IMAGES LABELS OUT.h5"; then pass "--help"; else fail "--help"; fi
expect_error "unknown command" "unknown command" frobnicate
expect_error "missing option" "--samples is required" synth x.h5 --features 3 --classes 2
expect_error "classes and targets" "exactly one of" synth x.h5 --samples 3 --features 3 --classes 2 --targets 2

# ---- import-idx -------------------------------------------------------------------------
# Five 3x4 images with known pixels, labels 0 3 9 1 2; a gzipped copy; broken variants.
"$PY" - <<'EOF'
import gzip, struct, numpy as np
pix = (np.arange(5 * 12, dtype=np.uint32) * 37 % 256).astype(np.uint8)
pix[0], pix[1] = 255, 0  # the extremes: X min 0, max 1
img = struct.pack(">IIII", 0x803, 5, 3, 4) + pix.tobytes()
lab = struct.pack(">II", 0x801, 5) + bytes([0, 3, 9, 1, 2])
open("img.idx", "wb").write(img)
open("lab.idx", "wb").write(lab)
gzip.open("img.idx.gz", "wb").write(img)
gzip.open("lab.idx.gz", "wb").write(lab)
open("img_cut.idx", "wb").write(img[:-7])
gzip.open("img_cut.idx.gz", "wb").write(img[:-7])
open("img_cutgz.idx.gz", "wb").write(gzip.compress(img)[:-30])   # gzip stream itself cut
open("img_magic.idx", "wb").write(struct.pack(">I", 0x801) + img[4:])
open("lab4.idx", "wb").write(struct.pack(">II", 0x801, 4) + bytes([0, 3, 9, 1]))
open("lab12.idx", "wb").write(struct.pack(">II", 0x801, 5) + bytes([0, 12, 9, 1, 2]))
np.save("pix.npy", pix.reshape(5, 12))
EOF

check_idx() { # check_idx FILE LABELS CLASSES
  py "import-idx contents of $1" "
f = h5py.File('$1', 'r')
pix = np.load('pix.npy')
X, y = f['X'], f['y']
assert X.dtype == np.float32 and X.shape == (5, 12), (X.dtype, X.shape)
assert np.array_equal(X[:], pix.astype(np.float32) / np.float32(255)), X[:]
assert X[0, 0] == 1.0
assert y.dtype == np.int32 and list(y[:]) == [$2], y[:]
assert int(y.attrs['classes']) == $3, y.attrs['classes']
assert f.attrs['format'] == b'nnmpi-data', f.attrs['format']
assert X.chunks is not None and X.chunks[1] == 12 and X.compression is None
"
}
"$TOOL" import-idx img.idx lab.idx plain.h5
check_idx plain.h5 "0, 3, 9, 1, 2" 10
"$TOOL" import-idx img.idx.gz lab.idx.gz gz.h5
check_idx gz.h5 "0, 3, 9, 1, 2" 10
"$TOOL" import-idx img.idx lab12.idx l12.h5
check_idx l12.h5 "0, 12, 9, 1, 2" 13
run_np 2 import-idx img.idx.gz lab.idx.gz np2.h5
check_idx np2.h5 "0, 3, 9, 1, 2" 10

expect_error "truncated IDX" "img_cut.idx: truncated" import-idx img_cut.idx lab.idx cut.h5
no_leftovers "truncated IDX" cut.h5
expect_error "truncated IDX, gzipped" "truncated" import-idx img_cut.idx.gz lab.idx.gz cut.h5
no_leftovers "truncated IDX, gzipped" cut.h5
expect_error "cut gzip stream" "truncated" import-idx img_cutgz.idx.gz lab.idx.gz cut.h5
no_leftovers "cut gzip stream" cut.h5
expect_error "bad magic" "bad IDX magic" import-idx img_magic.idx lab.idx bad.h5
expect_error "count mismatch" "5 images but lab4.idx holds 4 labels" import-idx img.idx lab4.idx bad.h5
expect_error "missing file" "nonexistent.idx: cannot open" import-idx nonexistent.idx lab.idx bad.h5
no_leftovers "failed imports" bad.h5
# a failure must not destroy an existing OUT either
cp plain.h5 keep.h5
expect_error "truncated IDX over an existing file" "truncated" import-idx img_cut.idx lab.idx keep.h5
if cmp -s plain.h5 keep.h5; then pass "existing OUT kept"; else fail "existing OUT changed"; fi

# ---- inspect ----------------------------------------------------------------------------
"$TOOL" inspect plain.h5 >inspect.txt
if grep -q "^dataset X: shape (5, 12), float32, chunks (5, 12), filters: none$" inspect.txt &&
  grep -q "^dataset y: shape (5,), int32" inspect.txt &&
  grep -q "^format: nnmpi-data$" inspect.txt &&
  grep -q "^X: min 0 max 1 nan 0 inf 0$" inspect.txt; then
  pass "inspect: shapes and range"
else
  fail "inspect: shapes and range: $(cat inspect.txt)"
fi
expected_hist=$(printf '  %s\n' 0:\ 1 1:\ 1 2:\ 1 3:\ 1 4:\ 0 5:\ 0 6:\ 0 7:\ 0 8:\ 0 9:\ 1)
if [ "$(sed -n '/histogram:/,$p' inspect.txt | tail -n +2)" = "$expected_hist" ]; then
  pass "inspect: histogram"
else
  fail "inspect: histogram: $(cat inspect.txt)"
fi
# a file outside the layout: labels out of range and NaN in X
"$PY" -c "
import h5py, numpy as np
with h5py.File('broken.h5', 'w') as f:
    f['X'] = np.array([[0, np.nan], [1, 2]], np.float32)
    f.create_dataset('y', data=np.array([0, 5], np.int32)).attrs['classes'] = 2
"
expect_error "inspect: out-of-range label" "1 labels outside \[0, 2\)" inspect broken.h5
expect_error "inspect: not HDF5" "img.idx: not an HDF5 file" inspect img.idx
expect_error "split: missing input" "nope.h5: cannot open: No such file" split nope.h5 a.h5 b.h5 --test-fraction 0.5
expect_error "synth: output directory missing" "cannot create" synth nodir/x.h5 --samples 3 --features 2 --classes 2

# ---- synth ------------------------------------------------------------------------------
SYNTH=(--samples 1001 --features 7 --classes 4 --seed 42)
"$TOOL" synth s0.h5 "${SYNTH[@]}" # singleton MPI, no mpiexec
run_np 1 synth s1.h5 "${SYNTH[@]}"
run_np 2 synth s2.h5 "${SYNTH[@]}"
run_np 3 synth s3.h5 "${SYNTH[@]}"
# tiny blocks: many collective writes, ranks running out of rows at different times
NNMPI_DATA_BLOCK_BYTES=200 run_np 3 synth s3b.h5 "${SYNTH[@]}"
"$TOOL" synth s1noseed.h5 --samples 1001 --features 7 --classes 4 --seed 43
run_np 3 synth tiny.h5 --samples 2 --features 7 --classes 4 --seed 42 # a rank with no rows
py "synth: same file without mpiexec and at 1, 2, 3 ranks" "
ref = h5py.File('s1.h5', 'r')
for name in ['s0.h5', 's2.h5', 's3.h5', 's3b.h5']:
    f = h5py.File(name, 'r')
    for d in 'Xy':
        assert np.array_equal(ref[d][:], f[d][:]), (name, d)
other = h5py.File('s1noseed.h5', 'r')
assert not np.array_equal(ref['X'][:], other['X'][:]), 'another seed gives the same X'
tiny = h5py.File('tiny.h5', 'r')
assert np.array_equal(tiny['X'][:], ref['X'][:2]) and np.array_equal(tiny['y'][:], ref['y'][:2])
"
if [ "$(h5dump -d X s1.h5 | tail -n +2)" = "$(h5dump -d X s3.h5 | tail -n +2)" ]; then
  pass "synth: h5dump of X equal at 1 and 3 ranks"
else
  fail "synth: h5dump of X differs"
fi
py "synth: labels and X range" "
f = h5py.File('s1.h5', 'r')
X, y = f['X'][:], f['y'][:]
assert X.shape == (1001, 7) and X.dtype == np.float32 and y.dtype == np.int32
assert X.min() >= 0 and X.max() < 1, (X.min(), X.max())
assert y.min() >= 0 and y.max() <= 3, (y.min(), y.max())
assert int(f['y'].attrs['classes']) == 4
counts = np.bincount(y, minlength=4)
assert (counts > 0).sum() > 1, counts
print('class counts', counts)
"
run_np 1 synth r1.h5 --samples 300 --features 5 --targets 3 --seed 7 --normal
run_np 2 synth r2.h5 --samples 300 --features 5 --targets 3 --seed 7 --normal
py "synth regression: same at 1 and 2 ranks, shape (N, T)" "
a, b = h5py.File('r1.h5', 'r'), h5py.File('r2.h5', 'r')
assert a['y'].shape == (300, 3) and a['y'].dtype == np.float32
assert 'classes' not in a['y'].attrs
assert np.array_equal(a['X'][:], b['X'][:]) and np.array_equal(a['y'][:], b['y'][:])
assert a['X'][:].min() < 0 and np.isfinite(a['y'][:]).all() and a['y'][:].std() > 0
"
# the teacher's labels are learnable: nearest class mean beats chance by far on a big set
"$TOOL" synth learn.h5 --samples 20000 --features 10 --classes 3 --seed 5 --noise 0.05
py "synth: labels depend on X" "
f = h5py.File('learn.h5', 'r')
X, y = f['X'][:].astype(np.float64), f['y'][:]
Xtr, ytr, Xte, yte = X[:15000], y[:15000], X[15000:], y[15000:]
# logistic regression on a few random tanh features
rng = np.random.default_rng(0)
W = rng.normal(size=(10, 200)) * 2
Htr, Hte = np.tanh((Xtr - 0.5) @ W), np.tanh((Xte - 0.5) @ W)
Y = np.eye(3)[ytr]
B = np.linalg.solve(Htr.T @ Htr + 1e-2 * np.eye(200), Htr.T @ Y)
acc = (np.argmax(Hte @ B, 1) == yte).mean()
chance = np.bincount(yte).max() / len(yte)
print('accuracy %.3f, majority class %.3f' % (acc, chance))
assert acc > chance + 0.2, (acc, chance)
"

# ---- split ------------------------------------------------------------------------------
"$TOOL" synth big.h5 --samples 1000 --features 6 --classes 5 --seed 3
"$TOOL" split big.h5 tr1.h5 te1.h5 --test-fraction 0.25 --seed 9
NNMPI_DATA_BLOCK_BYTES=300 "$TOOL" split big.h5 tr2.h5 te2.h5 --test-fraction 0.25 --seed 9
"$TOOL" split big.h5 tr3.h5 te3.h5 --test-fraction 0.25 --seed 10
py "split: sizes, partition, determinism" "
src = h5py.File('big.h5', 'r')
X, y = src['X'][:], src['y'][:]
index = {X[i].tobytes(): i for i in range(len(X))}
assert len(index) == 1000
parts = {}
for name in ['tr1', 'te1', 'tr2', 'te2', 'tr3', 'te3']:
    f = h5py.File(name + '.h5', 'r')
    Xp, yp = f['X'][:], f['y'][:]
    rows = np.array([index[r.tobytes()] for r in Xp])
    assert np.array_equal(yp, y[rows]), name
    assert np.all(np.diff(rows) > 0), name + ': order not kept'
    assert int(f['y'].attrs['classes']) == 5
    parts[name] = rows
assert len(parts['te1']) == 250 and len(parts['tr1']) == 750
assert np.array_equal(np.sort(np.concatenate([parts['tr1'], parts['te1']])), np.arange(1000))
assert np.array_equal(parts['te1'], parts['te2']), 'same seed, another block size: other split'
assert not np.array_equal(parts['te1'], parts['te3']), 'another seed gives the same split'
"
expect_error "split: empty part" "leaves a part empty" split big.h5 a.h5 b.h5 --test-fraction 0.0001
no_leftovers "split: empty part" a.h5
"$TOOL" split r1.h5 rtr.h5 rte.h5 --test-fraction 0.1
py "split: regression targets" "
a, b = h5py.File('rtr.h5', 'r'), h5py.File('rte.h5', 'r')
assert a['y'].shape == (270, 3) and b['y'].shape == (30, 3) and b['y'].dtype == np.float32
"

# ---- import-csv -------------------------------------------------------------------------
cat >data.csv <<'EOF'
a,b,label,c
0.5,-1.25,2,3
1e-3, 7 ,0,-0.1
4,5,1,6

2.5,0.1,2,1e10
EOF
"$TOOL" import-csv data.csv csv.h5 --label-column 2 --header
py "import-csv contents" "
f = h5py.File('csv.h5', 'r')
want = np.array([[0.5, -1.25, 3], [1e-3, 7, -0.1], [4, 5, 6], [2.5, 0.1, 1e10]]).astype(np.float32)
assert f['X'].dtype == np.float32 and np.array_equal(f['X'][:], want), f['X'][:]
assert list(f['y'][:]) == [2, 0, 1, 2] and f['y'].dtype == np.int32
assert int(f['y'].attrs['classes']) == 3
"
tail -n +2 data.csv | gzip >nohdr.csv.gz
"$TOOL" import-csv nohdr.csv.gz csvgz.h5 --label-column=2
py "import-csv gzipped, no header" "
a, b = h5py.File('csv.h5', 'r'), h5py.File('csvgz.h5', 'r')
assert np.array_equal(a['X'][:], b['X'][:]) and np.array_equal(a['y'][:], b['y'][:])
"
printf '1,2,0\n3,4,1\n' >last.csv
"$TOOL" import-csv last.csv last.h5 --label-column -1
py "import-csv label in the last column" "
f = h5py.File('last.h5', 'r')
assert f['X'].shape == (2, 2) and list(f['y'][:]) == [0, 1]
"
expect_error "csv: header without --header" "data.csv:1: field 0 \('a'\) is not a number" import-csv data.csv bad.h5 --label-column 2
printf '1,2,0\n3,x,1\n' >nan.csv
expect_error "csv: non-numeric field" "nan.csv:2: field 1" import-csv nan.csv bad.h5 --label-column 2
printf '1,2,0\n3,1\n' >ragged.csv
expect_error "csv: ragged row" "ragged.csv:2: 2 fields, expected 3" import-csv ragged.csv bad.h5 --label-column 2
printf '1,2,0.5\n' >frac.csv
expect_error "csv: fractional label" "label '0.5'" import-csv frac.csv bad.h5 --label-column 2
no_leftovers "failed csv imports" bad.h5

# ---- nothing left behind by any command -------------------------------------------------
if compgen -G "*.tmp.*" >/dev/null; then fail "temporary files left: $(echo *.tmp.*)"; else pass "no temporary files"; fi

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all nnmpi-data checks passed"
