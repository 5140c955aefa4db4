#!/usr/bin/env bash
# Smoke test of nnmpi's Slurm usage on a private one-host cluster (tests/slurm/cluster.sh).
#   tests/slurm/smoke_test.sh        (as root, with slurm-wlm, munge and libpmix-dev installed)
# Checks, each as a real batch job:
#   1. a 2-task job runs `srun --mpi=pmix build/nnmpi --version`: one MPI job of 2 ranks
#   2. the same through `mpirun` inside the allocation
#   3. a failing batch script's exit status comes back through `sbatch --wait`
#   4. `scancel --signal=USR1 --batch` reaches the trap of a script that runs `srun ... &; wait`,
#      which forwards it to the step; 5. the same with `scancel --signal=USR1 --full`
#   6. `scontrol requeue` + `scontrol update StartTime=now` restarts the job at once with
#      SLURM_RESTART_COUNT=1, appending to the same log
#   7. jobs/scaling.sbatch as a small job array appends its CSV rows
# The cluster is always stopped on exit. Prints `N passed, M failed`; exit 0 only if all pass.
# Environment: NNMPI_BIN (default build/nnmpi, built with scripts/build if missing),
#   NNMPI_SLURM_PORT (see cluster.sh), KEEP_SLURM_TEST=1 keeps the temp dir for inspection.
set -uo pipefail

# Not root or no Slurm: status 77 (for CTest's SKIP_RETURN_CODE), not a pass.
if [ "$(id -u)" -ne 0 ] || ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
  echo "SKIP: needs root and the packages slurm-wlm munge (and libpmix-dev for srun --mpi=pmix)"
  exit 77
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${NNMPI_BIN:-$root/build/nnmpi}
if [ ! -x "$bin" ]; then
  echo "building nnmpi ($bin missing)"
  "$root/scripts/build" > /dev/null || { echo "scripts/build failed"; echo "0 passed, 1 failed"; exit 1; }
fi

passed=0 failed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
t0=$SECONDS

work=$(mktemp -d /tmp/nnmpi-slurm.XXXXXX) && chmod 0711 "$work"  # munged (user munge) must reach $work/c/munge
cluster=$work/c
cleanup() {
  "$here/cluster.sh" stop "$cluster" > /dev/null 2>&1 || true
  if [ "${KEEP_SLURM_TEST:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# A job started by this test must not inherit the job context of a surrounding Slurm job.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(SLURM_[A-Z_]*\)=.*/\1/p' | grep -vx SLURM_CONF)

if ! env_line=$("$here/cluster.sh" start "$cluster"); then
  fail "cluster start"; echo "$passed passed, $failed failed"; exit 1
fi
eval "$env_line"
pass "cluster started in $((SECONDS - t0))s ($env_line)"
cd "$work" || exit 1
export NNMPI_BIN=$bin OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# wait_until SECONDS COMMAND...: poll COMMAND every 0.2 s; fails on timeout.
wait_until() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -lt "$end" ] || return 1; sleep 0.2; done
}
job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
job_field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
in_file() { grep -q -- "$2" "$1" 2>/dev/null; }
state_is() { [ "$(job_state "$1")" = "$2" ]; }
# submit_wait SCRIPT: sbatch --wait with a bound; echoes the job id, returns the job's status.
submit_wait() { timeout 90 sbatch --wait --parsable "$@"; }
show_log() { echo "--- $1:"; sed 's/^/    /' "$1" 2>/dev/null | tail -n 20; }

# 1. srun --mpi=pmix: rank 0 alone prints the version, so one line means one 2-rank MPI job
#    (two singletons would print two lines); PMIX_RANK shows the two ranks.
cat > pmix.sh << 'EOF'
#!/bin/bash
#SBATCH --ntasks=2 --time=2 --output=pmix.out
set -e
srun --mpi=pmix "$NNMPI_BIN" --version
srun --mpi=pmix bash -c 'echo "rank=$PMIX_RANK of $SLURM_NTASKS"'
EOF
t=$SECONDS
if jid=$(submit_wait pmix.sh) && [ "$(grep -c '^nnmpi ' pmix.out)" = 1 ] \
   && in_file pmix.out 'rank=0 of 2' && in_file pmix.out 'rank=1 of 2' \
   && [ "$(job_field "$jid" ExitCode)" = 0:0 ]; then
  pass "srun --mpi=pmix: 2-rank job ran, exit 0 ($((SECONDS - t))s)"
else
  fail "srun --mpi=pmix job"; show_log pmix.out
fi

# 2. mpirun inside the allocation (Open MPI reads the allocation from Slurm, starts its daemons
#    with srun); as root it needs OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM), exported above.
cat > mpirun.sh << 'EOF'
#!/bin/bash
#SBATCH --ntasks=2 --time=2 --output=mpirun.out
set -e
mpirun "$NNMPI_BIN" --version
EOF
t=$SECONDS
if submit_wait mpirun.sh > /dev/null && [ "$(grep -c '^nnmpi ' mpirun.out)" = 1 ]; then
  pass "mpirun inside the allocation: 2-rank job ran, exit 0 ($((SECONDS - t))s)"
else
  fail "mpirun job"; show_log mpirun.out
fi

# 3. A failing job: sbatch --wait returns non-zero, ExitCode shows the script's status.
printf '#!/bin/bash\n#SBATCH --ntasks=1 --time=1 --output=fail.out\nexit 3\n' > fail.sh
jid=$(submit_wait fail.sh); rc=$?
if [ $rc -ne 0 ] && [ "$(job_field "$jid" ExitCode)" = 3:0 ]; then
  pass "failing job: sbatch --wait status $rc, ExitCode 3:0"
else
  fail "failing job: sbatch --wait status $rc, ExitCode $(job_field "$jid" ExitCode)"
fi

# 4/5. USR1 to a batch script running `srun ... &` + `wait`: bash runs the trap only once the
#    foreground command ends, hence the background srun; the trap forwards USR1 to srun, which
#    passes it to the tasks. The task here traps it too and exits 0, as nnmpi would (after a
#    checkpoint; nnmpi exits 75). With --full every process of every step gets the signal directly
#    too (so the task sees it twice, and its `sleep` may die of it before bash runs the trap: the
#    task loops instead of a single `sleep 100 & wait`, which would then return 0 silently).
cat > signal.sh << 'EOF'
#!/bin/bash
#SBATCH --ntasks=1 --time=2
trap 'echo "batch trap: USR1"; kill -USR1 "$srun_pid" 2> /dev/null' USR1
srun --mpi=none bash -c 'trap "echo step: USR1; exit 0" USR1; echo step ready; while :; do sleep 1 & wait $!; done' &
srun_pid=$!
wait "$srun_pid"; rc=$?
# wait returns 138 (128+USR1) when the trap interrupted it: wait for srun itself to end.
while [ $rc -gt 128 ] && kill -0 "$srun_pid" 2> /dev/null; do wait "$srun_pid"; rc=$?; done
echo "srun exited $rc"
EOF
for mode in batch full; do
  t=$SECONDS
  jid=$(sbatch --parsable --output="signal-$mode.out" signal.sh)
  if ! wait_until 30 in_file "signal-$mode.out" 'step ready'; then
    fail "scancel --$mode: step did not start"; show_log "signal-$mode.out"; scancel "$jid"; continue
  fi
  scancel --signal=USR1 "--$mode" "$jid"
  if wait_until 30 state_is "$jid" COMPLETED && in_file "signal-$mode.out" 'batch trap: USR1' \
     && in_file "signal-$mode.out" 'step: USR1' && in_file "signal-$mode.out" 'srun exited 0'; then
    pass "scancel --signal=USR1 --$mode reached the batch trap and the step ($((SECONDS - t))s)"
  else
    fail "scancel --signal=USR1 --$mode (state $(job_state "$jid"))"; show_log "signal-$mode.out"
    scancel "$jid" 2> /dev/null
  fi
done

# 6. Requeue: same job id, script from the top, SLURM_RESTART_COUNT=1, log appended. A requeued
#    batch job is held ~2 minutes (BeginTime) unless its StartTime is set to now; that is only
#    accepted once the job is PENDING again (after the old run has been killed).
cat > requeue.sh << 'EOF'
#!/bin/bash
#SBATCH --ntasks=1 --time=2 --requeue --open-mode=append --output=requeue.out
echo "start restart=${SLURM_RESTART_COUNT:-0} job=$SLURM_JOB_ID"
if [ "${SLURM_RESTART_COUNT:-0}" -eq 0 ]; then sleep 100; fi
echo "done restart=${SLURM_RESTART_COUNT:-0}"
EOF
t=$SECONDS
jid=$(sbatch --parsable requeue.sh)
ok=1
wait_until 30 in_file requeue.out 'start restart=0' || { ok=0; echo "first run did not start"; }
if [ $ok = 1 ]; then
  scontrol requeue "$jid" || ok=0
  wait_until 30 state_is "$jid" PENDING || { ok=0; echo "not pending after requeue: $(job_state "$jid")"; }
fi
t_pend=$SECONDS
if [ $ok = 1 ]; then
  scontrol update jobid="$jid" StartTime=now || ok=0
  wait_until 30 state_is "$jid" COMPLETED || { ok=0; echo "not completed: $(job_state "$jid")"; }
fi
if [ $ok = 1 ] && in_file requeue.out 'start restart=0' && in_file requeue.out "start restart=1 job=$jid" \
   && in_file requeue.out 'done restart=1' && [ "$(job_field "$jid" Restarts)" = 1 ]; then
  pass "requeue + StartTime=now: restarted with SLURM_RESTART_COUNT=1 ($((t_pend - t))s to pending, $((SECONDS - t_pend))s to done)"
else
  fail "requeue"; show_log requeue.out; scancel "$jid" 2> /dev/null
fi

# 7. jobs/scaling.sbatch as a 2-task array (1 and 2 ranks) on a tiny problem: two CSV rows with
#    metrics and exit status 0.
data_bin=${NNMPI_DATA_BIN:-$(dirname "$bin")/nnmpi-data}
t=$SECONDS
mkdir -p logs
printf '[model]\nlayers = 16, 8, 4\n[data]\ntrain = tiny.h5\n[train]\nepochs = 2\nbatch_size = 64\nlearning_rate = 0.05\n' > tiny.ini
if ! "$data_bin" synth tiny.h5 --samples 2000 --features 16 --classes 4 --seed 1 > /dev/null 2>&1; then
  fail "scaling.sbatch: $data_bin synth failed"
elif SCALING_RANKS="1 2" SCALING_CSV=scaling.csv submit_wait --array=0-1 "$root/jobs/scaling.sbatch" tiny.ini > /dev/null \
   && [ "$(wc -l < scaling.csv)" = 3 ] \
   && [ "$(awk -F, 'NR > 1 && $7 == 2 && $8 > 0 && $NF == 0 { n++ } END { print n + 0 }' scaling.csv)" = 2 ] \
   && [ "$(cut -d, -f3 scaling.csv | sed 1d | sort | tr '\n' ' ')" = "1 2 " ] \
   && [ "$(head -n 1 scaling.csv | cut -d, -f16-21)" = time_forward_s_max,time_backward_s_max,time_allreduce_wait_s_max,time_allreduce_wait_s_min,time_update_s_max,time_io_s_max ] \
   && [ "$(awk -F, 'NR > 1 && $16 > 0 && $17 > 0 { n++ } END { print n + 0 }' scaling.csv)" = 2 ]; then
  pass "jobs/scaling.sbatch array 1,2 ranks: 2 CSV rows ($((SECONDS - t))s)"
else
  fail "jobs/scaling.sbatch"; show_log scaling.csv; for f in logs/scaling-*.out; do show_log "$f"; done
fi

# 8. Stop: every daemon gone.
t=$SECONDS
"$here/cluster.sh" stop "$cluster" 2> /dev/null
if "$here/cluster.sh" status "$cluster" > /dev/null 2>&1; then fail "cluster still up after stop"
else pass "cluster stopped ($((SECONDS - t))s)"; fi

echo "total $((SECONDS - t0))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
