#!/usr/bin/env bash
# A private one-host Slurm cluster for tests: munged + slurmctld + slurmd, all state under DIR.
#
#   tests/slurm/cluster.sh start  DIR   # start (or reuse a healthy one), print `export SLURM_CONF=...`
#   tests/slurm/cluster.sh stop   DIR   # cancel its jobs, stop exactly the daemons it started
#   tests/slurm/cluster.sh status DIR   # daemons and sinfo; exit 0 only when all are up
#
#   eval "$(tests/slurm/cluster.sh start /tmp/slurm-test)"; sbatch --wait ...; tests/slurm/cluster.sh stop /tmp/slurm-test
#
# Needs root and Debian's `slurm-wlm munge` (Slurm 22.05, MUNGE 0.5); srun --mpi=pmix also needs
# `libpmix-dev` (the pmix plugin dlopens the unversioned libpmix.so; libopenmpi-dev depends on it).
# Environment:
#   NNMPI_SLURM_PORT     slurmctld port; slurmd uses the next one. Default: the first free pair
#                        of 16817/16818, 16827/16828, ...
#   NNMPI_SLURM_TIMEOUT  seconds to wait for each daemon and for the node to be idle (default 60)
#
# Everything lives under DIR, nothing under /etc/slurm, /etc/munge or /run/munge is used or
# touched, so daemons that a package install may have started (with the default config, ports
# 6817/6818 and /run/munge/munge.socket.2) are left alone and do not interfere:
#   DIR/etc/slurm.conf                 our config (callers set SLURM_CONF to it)
#   DIR/munge/                         owned by the munge user, mode 0711: key, socket, pid, log, seed
#   DIR/state DIR/spool DIR/log DIR/run DIR/tmp   slurmctld state, slurmd spool, logs, pid
#                                      files, TmpFS (pmix client dirs)
#   DIR/env                            the `export SLURM_CONF=...` line, for `source`
# Only the `export` line goes to stdout; progress and errors go to stderr.
set -euo pipefail

me=${0##*/}
say() { echo "$me: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() { sed -n '2,6s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
case $action in start|stop|status) ;; *) usage ;; esac

timeout=${NNMPI_SLURM_TIMEOUT:-60}
ctld_port=${NNMPI_SLURM_PORT:-16817}
slurmd_port=$((ctld_port + 1))
# Daemons are started with this variable set; slurmd passes its environment on to the
# slurmstepd processes it starts, which is how `stop` finds the ones belonging to this cluster.
marker_var=NNMPI_SLURM_HARNESS_DIR

[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd and slurmctld run as root here)"
for prog in munged mungekey munge unmunge slurmctld slurmd sinfo squeue scancel runuser; do
  command -v "$prog" > /dev/null \
    || die "$prog not found: apt-get install -y --no-install-recommends slurm-wlm munge"
done
id munge > /dev/null 2>&1 || die "no 'munge' user (the munge package creates it)"

if [ ! -d "$2" ]; then
  case $action in
    start) mkdir -p "$2" ;;
    stop) say "nothing to stop: no directory $2"; exit 0 ;;
    status) echo "no cluster: no directory $2"; exit 1 ;;
  esac
fi
dir=$(cd "$2" && pwd -P)
# Unix socket paths (munge's socket, slurmd's step sockets in the spool dir) are limited to
# 108 bytes: keep DIR short.
[ ${#dir} -le 64 ] || die "DIR path too long for unix sockets (${#dir} > 64 chars): $dir"

conf=$dir/etc/slurm.conf
mdir=$dir/munge
msock=$mdir/munge.socket
export SLURM_CONF=$conf

# pid_of NAME: the pid in DIR/run/NAME.pid (munged: DIR/munge/munged.pid) when that process is
# alive and really is NAME (guards against a recycled pid from an old run); else fails.
pid_of() {
  local name=$1 file pid comm
  if [ "$name" = munged ]; then file=$mdir/munged.pid; else file=$dir/run/$name.pid; fi
  [ -r "$file" ] || return 1
  pid=$(tr -dc 0-9 < "$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [ "$comm" = "$name" ] || return 1
  # A zombie (exited, not yet reaped by its parent, e.g. a PID 1 that never reaps) is not alive.
  is_zombie "$pid" && return 1
  echo "$pid"
}

is_zombie() { [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
  local pid=$1 end=$((SECONDS + $2))
  while [ -e "/proc/$pid" ]; do
    # A zombie is gone for our purposes (its parent, not us, has to reap it).
    is_zombie "$pid" && return 0
    [ $SECONDS -ge $end ] && return 1
    sleep 0.2
  done
}

# stop_pid NAME PID: SIGTERM, wait, SIGKILL if needed.
stop_pid() {
  local name=$1 pid=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  if ! wait_gone "$pid" 15; then
    say "$name ($pid) still running after SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || say "warning: $name ($pid) did not exit"
  fi
}

# Our slurmstepd processes: those whose environment carries our marker with this DIR.
our_stepds() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
    is_zombie "${p#/proc/}" && continue
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qxF "$marker_var=$dir" && echo "${p#/proc/}"
  done
  return 0
}

# descendants PID...: all live descendants of the PIDs (children before grandchildren).
descendants() {
  local frontier=" $* " found=1 p ppid
  while [ $found = 1 ]; do
    found=0
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      case $frontier in *" $p "*) continue ;; esac
      ppid=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || continue
      case $frontier in *" $ppid "*) frontier="$frontier$p "; is_zombie "$p" || echo "$p"; found=1 ;; esac
    done
  done
}

# healthy: all three daemons alive and the node usable (idle, or running jobs).
healthy() {
  pid_of munged > /dev/null && pid_of slurmctld > /dev/null && pid_of slurmd > /dev/null || return 1
  case $(sinfo -h -N -o %T 2>/dev/null | head -n 1) in idle | mixed | allocated) return 0 ;; esac
  return 1
}

do_stop() {
  local pid jobs end stepds procs
  # 1. Cancel every job of this cluster so that no job processes outlive it (KillWait is 5 s).
  if pid_of slurmctld > /dev/null && [ -r "$conf" ]; then
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ') || jobs=
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      end=$((SECONDS + 20))
      while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ $SECONDS -lt $end ]; do sleep 0.5; done
    fi
  fi
  # 2. Daemons in reverse start order, by their pid files; then leftover step daemons.
  for name in slurmd slurmctld; do
    if pid=$(pid_of "$name"); then say "stopping $name ($pid)"; stop_pid "$name" "$pid"; fi
    rm -f "$dir/run/$name.pid"
  done
  # A killed slurmd/slurmctld (stale run) leaves its step daemons and their job processes behind:
  # stop the job processes (descendants of our slurmstepds) first, then the slurmstepds.
  stepds=$(our_stepds | tr "\n" " ")
  # Without their slurmd they cannot shut down cleanly (slurmstepd ignores SIGTERM, srun waits for
  # its dead step): SIGTERM all job processes at once, 3 s of grace, then SIGKILL everything.
  if [ -n "$stepds" ]; then
    procs=$(descendants "$stepds" | tr "\n" " ")
    say "killing leftover steps of a previous run: slurmstepd $stepds, job processes $procs"
    for pid in $procs; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $procs; do wait_gone "$pid" 3 || kill -KILL "$pid" 2>/dev/null || true; done
    for pid in $stepds; do kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; done
  fi
  if pid=$(pid_of munged); then say "stopping munged ($pid)"; stop_pid munged "$pid"; fi
  rm -f "$mdir/munged.pid"
}

do_status() {
  local rc=0 name pid
  for name in munged slurmctld slurmd; do
    if pid=$(pid_of "$name"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; rc=1; fi
  done
  echo "SLURM_CONF=$conf"
  if [ $rc -eq 0 ]; then sinfo -N -l || rc=1; squeue || rc=1; fi
  return $rc
}

port_in_use() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

# wait_for COMMAND...: poll COMMAND every 0.2 s for up to $timeout seconds.
wait_for() {
  local end=$((SECONDS + timeout))
  until "$@"; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}

fail_start() {
  say "error: $*"
  local f
  for f in "$mdir/munged.log" "$dir/log/slurmctld.log" "$dir/log/slurmd.log"; do
    [ -s "$f" ] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
  done
  do_stop
  exit 1
}

node_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null | head -n 1)" = idle ]; }
munge_works() { munge -n -S "$msock" 2>/dev/null | unmunge -S "$msock" > /dev/null 2>&1; }

do_start() {
  local host nodeline line key first_job_id
  # 0. Reuse a healthy cluster already running from DIR (start is idempotent).
  if [ -r "$conf" ] && healthy; then
    say "already running in $dir"
    echo "export SLURM_CONF=$conf" | tee "$dir/env"
    return 0
  fi
  # 1. Clean a stale previous run: stop what its pid files name, wipe its state.
  do_stop
  rm -rf "${dir:?}/etc" "$dir/state" "$dir/spool" "$dir/log" "$dir/run" "$dir/tmp" "$mdir" "$dir/env"
  mkdir -p "$dir/etc" "$dir/state" "$dir/spool" "$dir/log" "$dir/run" "$dir/tmp" "$mdir"
  chmod 1777 "$dir/tmp"
  # The munge user must be able to reach DIR/munge (mktemp -d makes DIR 0700).
  chmod 0711 "$dir"
  runuser -u munge -- test -x "$dir" \
    || die "the munge user cannot reach $dir: make its parent directories searchable (chmod o+x)"

  # Two clusters starting at once (parallel ctest) would both find the same ports free and talk
  # to each other's daemons (munge "Invalid credential"): choose the ports and start the daemons
  # under a host-wide lock, held until slurmctld and slurmd listen. The daemons get fd 8 closed,
  # or they would hold the lock for their whole life.
  exec 8> /tmp/nnmpi-slurm-cluster.lock
  flock -w $((2 * timeout)) 8 || die "another cluster.sh start holds /tmp/nnmpi-slurm-cluster.lock"
  # Ports: NNMPI_SLURM_PORT if set (an error if taken), else the first free pair of 16817/16818,
  # 16827/16828, ... so that several clusters (parallel tests, a developer's own) can coexist.
  local tries=0
  while port_in_use "$ctld_port" || port_in_use "$slurmd_port"; do
    [ -z "${NNMPI_SLURM_PORT:-}" ] || die "port $ctld_port or $slurmd_port is in use (another cluster?)"
    tries=$((tries + 1)); [ $tries -lt 50 ] || die "no free port pair from 16817 to $ctld_port"
    ctld_port=$((ctld_port + 10)); slurmd_port=$((ctld_port + 1))
  done

  # 2. munged as the munge user, with a fresh key of our own and all its files in DIR/munge.
  #    munged refuses files that others can write to: DIR/munge is munge-owned, mode 0711 (clients need to reach the socket).
  chown munge: "$mdir"; chmod 0711 "$mdir"
  key=$mdir/munge.key
  runuser -u munge -- mungekey --create --keyfile="$key" \
    || die "mungekey could not create $key"
  env "$marker_var=$dir" runuser -u munge -- munged --socket="$msock" --key-file="$key" \
    --pid-file="$mdir/munged.pid" --log-file="$mdir/munged.log" --seed-file="$mdir/munged.seed" 8>&- \
    || fail_start "munged did not start"
  wait_for munge_works || fail_start "munged does not answer on $msock"

  # 3. slurm.conf: the node as `slurmd -C` sees it (CPUs, sockets, cores, RealMemory).
  host=$(hostname -s)
  nodeline=$(slurmd -C | head -n 1)
  case $nodeline in NodeName=*) ;; *) die "slurmd -C printed no NodeName line: $nodeline" ;; esac
  nodeline=${nodeline#NodeName=* }
  first_job_id=$(( (RANDOM % 60000) * 1000 + 1 ))
  cat > "$conf" << EOF
# Written by tests/slurm/cluster.sh for a private one-host test cluster.
ClusterName=nnmpitest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$msock
# The default cgroup plugins fail in this container: track processes by parent pid, no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# Concurrent clusters on one host must not reuse job ids: the pmix plugin's and Open MPI's
# temporary files are named after the job and step (seen: "task launch failed" when two test
# clusters both ran job 7). A random first job id keeps them apart; TmpFS keeps pmix's client
# directories in DIR.
FirstJobId=$first_job_id
TmpFS=$dir/tmp
# No accounting daemon, no job completion log.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Short kill grace and timeouts keep tests quick; keep finished jobs visible for 5 minutes.
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MailProg=/bin/true
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host NodeAddr=127.0.0.1 $nodeline State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

  # 4. slurmctld then slurmd, as root; both daemonize and write their pid files.
  env "$marker_var=$dir" slurmctld -f "$conf" 8>&- || fail_start "slurmctld did not start"
  wait_for pid_of slurmctld > /dev/null || fail_start "slurmctld wrote no pid file"
  # -c: clean slurmd shared memory a killed earlier slurmd may have left.
  env "$marker_var=$dir" slurmd -c -f "$conf" 8>&- || fail_start "slurmd did not start"
  wait_for pid_of slurmd > /dev/null || fail_start "slurmd wrote no pid file"

  # 5. Bounded wait until the node registers and is idle.
  wait_for node_idle \
    || fail_start "node not idle after ${timeout}s (sinfo: $(sinfo -h -N -o '%N %T %E' 2>&1 | head -n 1))"
  exec 8>&-   # both daemons listen now: release the start lock
  line="export SLURM_CONF=$conf"
  echo "$line" > "$dir/env"
  say "cluster up in $dir (ports $ctld_port/$slurmd_port, node $host: $nodeline)"
  echo "$line"
}

case $action in
  start) do_start ;;
  stop) do_stop; say "stopped ($dir)" ;;
  status) do_status ;;
esac
