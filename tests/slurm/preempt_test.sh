#!/usr/bin/env bash
# Preemption and requeue of jobs/train.sbatch on a private one-host Slurm cluster
# (tests/slurm/cluster.sh), with real Slurm signals:
#   tests/slurm/preempt_test.sh      (as root, with slurm-wlm, munge and libpmix-dev installed)
# Checks:
#   a. reference: the same 2-rank training, uninterrupted, with mpirun outside Slurm
#   b. `scancel --signal=USR1 --batch JOB` while training: the batch shell's trap forwards USR1 to
#      srun, nnmpi checkpoints and exits 75, the script runs `scontrol requeue`, the job restarts
#      (same id, SLURM_RESTART_COUNT=1, log appended), resumes from the stop-time checkpoint and
#      completes with exit 0
#   c. `scontrol requeue JOB` while training: Slurm SIGTERMs the job, nnmpi checkpoints and exits
#      75, the script does not requeue a second time, the job restarts, resumes and completes
#   d. the final checkpoints of b and c are bit-identical to a's (ckpt_diff ... 0: same rank count)
#   e. NNMPI_LAUNCHER=mpirun, NNMPI_MAX_RESTARTS=0: USR1 stops nnmpi (75) and the bound stops the
#      requeue: the job ends FAILED with ExitCode 75:0 and Restarts=0
#   f. plain `scancel JOB`: checkpoint written, job CANCELLED, not requeued
# A requeued job is held by Slurm for ~2 minutes (BeginTime); the test releases it with
# `scontrol update jobid=JOB StartTime=now` as soon as it is PENDING again.
# Every wait is bounded; the cluster is always stopped on exit. Prints `N passed, M failed`;
# exit 0 only if all pass, 77 (skip) when not root or Slurm/munge is missing.
# Environment: NNMPI_BIN, NNMPI_DATA_BIN, NNMPI_CKPT_DIFF (default build/nnmpi,
#   build/nnmpi-data, build/tests/ckpt_diff), NNMPI_MPIEXEC (default mpirun, for the reference),
#   PREEMPT_EPOCHS (default 30: ~10-15 s per run at 2 ranks on an idle 2-core host), NNMPI_SLURM_PORT (cluster.sh),
#   KEEP_SLURM_TEST=1 keeps the temp dir for inspection.
# shellcheck disable=SC2317  # helpers called from wait_until, traps and after finish()
set -uo pipefail

if [ "$(id -u)" -ne 0 ] || ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null \
   || ! command -v sbatch > /dev/null; then
  echo "SKIP: needs root and the packages slurm-wlm munge (and libpmix-dev for srun --mpi=pmix)"
  exit 77
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${NNMPI_BIN:-$root/build/nnmpi}
data_bin=${NNMPI_DATA_BIN:-$(dirname "$bin")/nnmpi-data}
ckpt_diff=${NNMPI_CKPT_DIFF:-$(dirname "$bin")/tests/ckpt_diff}
mpiexec=${NNMPI_MPIEXEC:-mpirun}
epochs=${PREEMPT_EPOCHS:-30}
sbatch_script=$root/jobs/train.sbatch

passed=0 failed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() { echo "total $((SECONDS - t0))s"; echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }
t0=$SECONDS

for f in "$bin" "$data_bin" "$ckpt_diff"; do
  [ -x "$f" ] || { fail "$f missing (build with scripts/build -DBUILD_TESTING=ON)"; finish; }
done

work=$(mktemp -d /tmp/nnmpi-preempt.XXXXXX) && chmod 0711 "$work"  # munged (user munge) must reach $work/c/munge
cluster=$work/c
cleanup() {
  "$here/cluster.sh" stop "$cluster" > /dev/null 2>&1 || true
  if [ "${KEEP_SLURM_TEST:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Killed by ctest's TIMEOUT or ^C: exit through the EXIT trap, which stops the cluster's daemons.
trap 'echo "interrupted"; exit 1' TERM INT HUP
# A job started by this test must not inherit the job context of a surrounding Slurm job.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(SLURM_[A-Z_]*\)=.*/\1/p' | grep -vx SLURM_CONF)

if ! env_line=$("$here/cluster.sh" start "$cluster"); then fail "cluster start"; finish; fi
eval "$env_line"
pass "cluster started in $((SECONDS - t0))s"
cd "$work" || exit 1
mkdir -p logs   # train.sbatch's --output=logs/nnmpi-%j.out: Slurm does not create the directory

export NNMPI_BIN=$bin OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
# Bit-identical results need the same BLAS kernels in the reference and in the jobs: fix the
# core type here (the job script keeps a value it inherits) instead of relying on both choosing
# the same.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -q avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SKYLAKEX; fi
unset NNMPI_LAUNCHER NNMPI_REQUEUE NNMPI_MAX_RESTARTS

# ---- helpers ----
# wait_until SECONDS COMMAND...: poll COMMAND every 0.2 s; fails on timeout.
wait_until() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -lt "$end" ] || return 1; sleep 0.2; done
}
job_field() { scontrol show job "$1" 2> /dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
state_is() { [ "$(job_field "$1" JobState)" = "$2" ]; }
job_done() {
  case $(job_field "$1" JobState) in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE) return 0 ;;
  esac
  return 1
}
in_log() { grep -q -- "$2" "logs/nnmpi-$1.out" 2> /dev/null; }
show_log() {
  echo "--- logs/nnmpi-$1.out (without epoch and config lines), job $(job_field "$1" JobState) Restarts=$(job_field "$1" Restarts):"
  grep -v -E '^epoch |^[a-z_0-9]+ += |^\[|^$' "logs/nnmpi-$1.out" 2> /dev/null | tail -n 25 | sed 's/^/    /'
  echo "--- slurmctld and slurmd log lines of job $1:"
  grep -h -- "$1" "$cluster/log/slurmctld.log" "$cluster/log/slurmd.log" 2> /dev/null | tail -n 25 | sed 's/^/    /'
}
# newest_step DIR: global step of the newest checkpoint in DIR (0 if none).
newest_step() {
  local f
  f=$(find "$1" -maxdepth 1 -name 'ckpt-e*-s*.h5' 2> /dev/null | sort | tail -n 1)
  [ -n "$f" ] || { echo 0; return; }
  f=${f##*-s}; f=${f%.h5}; echo $((10#$f))
}
# running_with_ckpt JOB DIR STEP: the job is RUNNING and has a checkpoint at STEP or later.
running_with_ckpt() { state_is "$1" RUNNING && [ "$(newest_step "$2")" -ge "$3" ]; }
# submit NAME [nnmpi args]: sbatch train.sbatch (2 tasks), checkpoints in ck-NAME; echoes the id.
submit() {
  local name=$1; shift
  sbatch --parsable --ntasks=2 --job-name="nnmpi-$name" "$sbatch_script" preempt.ini \
    --set "checkpoint.dir=ck-$name" "$@"
}
# release JOB: once the requeued job is PENDING, lift Slurm's ~2-minute requeue hold.
release() {
  wait_until 30 state_is "$1" PENDING || { echo "job $1 not PENDING after the requeue: $(job_field "$1" JobState)"; return 1; }
  scontrol update jobid="$1" StartTime=now
}
# check_resumed JOB: the log shows the stop at step S, then restart 1 resuming from step S, then
# exit 0; the job is COMPLETED with ExitCode 0:0 and Restarts=1.
check_resumed() {
  local jid=$1 s f=logs/nnmpi-$1.out ok=0
  s=$(sed -n 's/^nnmpi: stopped: stopped by a signal at step \([0-9]*\).*/\1/p' "$f" | head -n 1)
  if [ -z "$s" ]; then echo "no 'nnmpi: stopped: stopped by a signal at step' line"; ok=1
  elif ! grep -q "^resume: from ck-[a-z0-9]*/ckpt-e[0-9]*-s0*$s\.h5: .*(global step $s)" "$f"; then
    echo "no 'resume: from ...-s$s.h5' line"; ok=1
  fi
  in_log "$jid" "job $jid restart 1 " || { echo "no 'restart 1' start line"; ok=1; }
  [ "$(sed -n '/^train.sbatch: nnmpi exited with status/p' "$f" | tr '\n' ' ')" \
    = "train.sbatch: nnmpi exited with status 75 train.sbatch: nnmpi exited with status 0 " ] \
    || { echo "want exactly 'status 75' then 'status 0' from nnmpi"; ok=1; }
  [ "$(job_field "$jid" JobState) $(job_field "$jid" ExitCode) $(job_field "$jid" Restarts)" = "COMPLETED 0:0 1" ] \
    || { echo "job $(job_field "$jid" JobState) ExitCode $(job_field "$jid" ExitCode) Restarts $(job_field "$jid" Restarts), want COMPLETED 0:0 1"; ok=1; }
  [ $ok = 0 ] && echo "stopped at step $s, resumed from it"
  return $ok
}

# ---- data and config: 20000 x 32, 4 classes; 312 steps an epoch ----
# Not named run.ini: tests/mpi_resume.sh kills processes matching `pgrep -f "$NNMPI_BIN run.ini"`
# (any run of that binary with a run.ini, e.g. this test's under a parallel ctest).
"$data_bin" synth data.h5 --samples 20000 --features 32 --classes 4 --seed 3 > /dev/null 2>&1 \
  || { fail "nnmpi-data synth"; finish; }
cat > preempt.ini << EOF
[model]
layers = 32, 256, 256, 4
activation = tanh
seed = 5
[data]
train = data.h5
partitions = 8
[train]
epochs = $epochs
batch_size = 64
learning_rate = 0.05
momentum = 0.9
[checkpoint]
dir = ck-ref
every_steps = 50
keep = 3
EOF
steps_per_epoch=312
final=$(printf 'ckpt-e%04d-s%09d.h5' "$epochs" $((epochs * steps_per_epoch)))

# ---- a. reference: uninterrupted, mpirun -np 2, outside Slurm ----
t=$SECONDS
if timeout 180 "$mpiexec" -np 2 "$bin" preempt.ini > ref.log 2>&1 && [ -f "ck-ref/$final" ]; then
  ref_s=$((SECONDS - t)); pass "a. reference run: $epochs epochs at 2 ranks in ${ref_s}s"
else
  fail "a. reference run (status $?, no ck-ref/$final)"; tail -n 5 ref.log; finish
fi
# Stop once the job has trained ~2 epochs (and written periodic checkpoints), well before the end.
stop_step=$((2 * steps_per_epoch))

# compare NAME: the final checkpoint of run NAME is bit-identical to the reference's.
compare() {
  local out
  if [ ! -f "ck-$1/$final" ]; then fail "d. $1: no final checkpoint ck-$1/$final"
  elif out=$("$ckpt_diff" "ck-ref/$final" "ck-$1/$final" 0 2>&1); then pass "d. $1: final weights bit-identical to the reference ($out)"
  else fail "d. $1: final checkpoint differs from the reference: $out"; fi
}

# ---- b. scancel --signal=USR1 --batch: trap forwards USR1, nnmpi exits 75, script requeues ----
t=$SECONDS
jid=$(submit usr1) || { fail "b. sbatch"; finish; }
if ! wait_until 60 running_with_ckpt "$jid" ck-usr1 "$stop_step"; then
  fail "b. job $jid not running with a checkpoint at step >= $stop_step after 60s"; show_log "$jid"; scancel "$jid"
else
  t_run=$SECONDS
  scancel --signal=USR1 --batch "$jid"
  if ! wait_until 30 in_log "$jid" 'requeueing job'; then
    fail "b. no requeue by the script within 30s"; show_log "$jid"; scancel "$jid"
  elif ! release "$jid"; then
    fail "b. requeued job not released"; show_log "$jid"; scancel "$jid"
  else
    t_rel=$SECONDS
    if ! wait_until 120 job_done "$jid"; then
      fail "b. job not done 120s after the restart"; show_log "$jid"; scancel "$jid"
    elif msg=$(check_resumed "$jid") && in_log "$jid" 'got SIGUSR1, forwarding SIGUSR1 to srun' \
         && in_log "$jid" '^srun: error: .*Exited with exit code 75'; then
      pass "b. USR1 to the batch shell: exit 75, self-requeue, restart 1 resumed and completed; $msg" \
        "($((t_run - t))s to checkpoint, $((t_rel - t_run))s stop+requeue, $((SECONDS - t_rel))s rest)"
      compare usr1
    else
      fail "b. USR1 + requeue + resume: $msg"; show_log "$jid"
    fi
  fi
fi
b_s=$((SECONDS - t))

# ---- c. scontrol requeue: Slurm SIGTERMs the job; nnmpi exits 75; Slurm restarts the job ----
t=$SECONDS
jid=$(submit requeue) || { fail "c. sbatch"; finish; }
if ! wait_until 60 running_with_ckpt "$jid" ck-requeue "$stop_step"; then
  fail "c. job $jid not running with a checkpoint at step >= $stop_step after 60s"; show_log "$jid"; scancel "$jid"
else
  t_run=$SECONDS
  scontrol requeue "$jid"
  if ! release "$jid"; then
    fail "c. requeued job not released"; show_log "$jid"; scancel "$jid"
  else
    t_rel=$SECONDS
    if ! wait_until 120 job_done "$jid"; then
      fail "c. job not done 120s after the restart"; show_log "$jid"; scancel "$jid"
    elif msg=$(check_resumed "$jid") && in_log "$jid" 'got SIGTERM, forwarding SIGUSR1' \
         && in_log "$jid" 'not requeueing: job state is' && ! in_log "$jid" 'requeueing job'; then
      pass "c. scontrol requeue: SIGTERM, exit 75, no second requeue, restart 1 resumed and completed; $msg" \
        "($((t_run - t))s to checkpoint, $((t_rel - t_run))s stop+requeue, $((SECONDS - t_rel))s rest)"
      compare requeue
    else
      fail "c. scontrol requeue + resume: $msg"; show_log "$jid"
    fi
  fi
fi
c_s=$((SECONDS - t))

# ---- e. mpirun launcher, NNMPI_MAX_RESTARTS=0: USR1 stops with 75, the bound stops the requeue ----
t=$SECONDS
jid=$(NNMPI_LAUNCHER=mpirun NNMPI_MAX_RESTARTS=0 submit bound) || { fail "e. sbatch"; finish; }
if ! wait_until 60 running_with_ckpt "$jid" ck-bound 50; then
  fail "e. job $jid not running with a checkpoint after 60s"; show_log "$jid"; scancel "$jid"
else
  scancel --signal=USR1 --batch "$jid"
  if wait_until 30 job_done "$jid" \
     && [ "$(job_field "$jid" JobState) $(job_field "$jid" ExitCode) $(job_field "$jid" Restarts)" = "FAILED 75:0 0" ] \
     && in_log "$jid" 'forwarding SIGUSR1 to mpirun' && in_log "$jid" '^nnmpi: stopped: stopped by a signal' \
     && in_log "$jid" 'not requeueing: 0 restarts reached NNMPI_MAX_RESTARTS=0'; then
    pass "e. mpirun launcher: USR1 -> exit 75, no requeue at NNMPI_MAX_RESTARTS=0, job FAILED 75:0 ($((SECONDS - t))s)"
  else
    fail "e. mpirun + NNMPI_MAX_RESTARTS=0"; show_log "$jid"; scancel "$jid" 2> /dev/null
  fi
fi

# ---- f. plain scancel: checkpoint at the stop, the job stays cancelled ----
t=$SECONDS
jid=$(submit cancel) || { fail "f. sbatch"; finish; }
if ! wait_until 60 running_with_ckpt "$jid" ck-cancel 50; then
  fail "f. job $jid not running with a checkpoint after 60s"; show_log "$jid"; scancel "$jid"
else
  scancel "$jid"
  # Let Slurm finish the job (KillWait is 5 s), then make sure it is not queued again.
  if wait_until 30 job_done "$jid" && sleep 2 && state_is "$jid" CANCELLED && [ "$(job_field "$jid" Restarts)" = 0 ] \
     && in_log "$jid" '^nnmpi: stopped: stopped by a signal' && ! in_log "$jid" 'requeueing job'; then
    pass "f. scancel: nnmpi checkpointed, job CANCELLED, not requeued ($((SECONDS - t))s)"
  else
    fail "f. scancel"; show_log "$jid"; scancel "$jid" 2> /dev/null
  fi
fi

echo "timings: reference ${ref_s:-?}s, b ${b_s}s, c ${c_s}s"
finish
