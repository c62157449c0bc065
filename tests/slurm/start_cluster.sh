#!/usr/bin/env bash
# Start (idempotently) a ONE-NODE Slurm cluster on localhost for integration tests.
#
#   sudo tests/slurm/start_cluster.sh      # must run as root
#
# - installs slurmctld slurmd slurm-client munge via apt if missing
# - creates a munge key if missing and starts munged (no systemd needed)
# - writes /etc/slurm/slurm.conf (single node = `hostname -s`, partition "debug")
# - starts slurmctld + slurmd directly (daemonized), waits until the node is
#   idle and a trivial job runs (bounded wait, START_TIMEOUT seconds, default 60)
# - if the cluster is already up and responsive it does nothing (fast no-op)
#
# Env knobs:
#   START_TIMEOUT   seconds to wait for the node / test job (default 60)
#   SLURM_PARTITION partition name (default debug)
#   CRED_EXPIRE     AuthInfo cred_expire (s); also the delay before a requeued
#                   job may start again (BeginTime = requeue + CRED_EXPIRE + 1).
#                   Slurm's default is 120; Slurm rejects values < 5 (logs
#                   "AuthInfo=cred_expire=N invalid" and silently uses 120).
#                   Default here: 5.
#   FORCE_RECONFIG=1  rewrite slurm.conf and restart daemons even if running
set -euo pipefail

START_TIMEOUT="${START_TIMEOUT:-60}"
PARTITION="${SLURM_PARTITION:-debug}"
CRED_EXPIRE="${CRED_EXPIRE:-5}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
NODE="$(hostname -s)"

log() { echo "[start_cluster] $*" >&2; }
die() { echo "[start_cluster] ERROR: $*" >&2; exit 1; }
trap 'rc=$?; echo "[start_cluster] ERROR: command failed (rc=$rc) at line $LINENO: $BASH_COMMAND" >&2' ERR

[[ "$(id -u)" == 0 ]] || die "must run as root"
[[ "$CRED_EXPIRE" =~ ^[0-9]+$ ]] && (( CRED_EXPIRE >= 5 )) \
  || die "CRED_EXPIRE must be an integer >= 5 (Slurm falls back to 120 otherwise)"

t0=$(date +%s)

# ---------------------------------------------------------------- helpers
# PIDs of live (non-zombie) processes whose command name is exactly $1
pids_of() { { ps -C "$1" -o pid=,stat= 2>/dev/null || true; } | awk '$2 !~ /^Z/ {print $1}'; }
running() { [[ -n "$(pids_of "$1")" ]]; }
node_state() {
  # prints e.g. "idle", "mix", "alloc", "down*", "drain", "" if unreachable
  timeout 10 sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n1 || true
}

cluster_healthy() {
  command -v sinfo >/dev/null 2>&1 || return 1
  running slurmctld || return 1
  running slurmd || return 1
  running munged || return 1
  case "$(node_state)" in
    idle|mix|alloc|comp) return 0 ;;
    *) return 1 ;;
  esac
}

summary() {
  echo "---- sinfo ----"
  sinfo
  echo "---- node ----"
  scontrol show node "$NODE" | grep -E 'NodeName|CPUTot|RealMemory|State' || true
}

# ------------------------------------------------------------ fast no-op path
if [[ "${FORCE_RECONFIG:-0}" != 1 ]] && cluster_healthy; then
  log "cluster already running and responsive (node $NODE: $(node_state)); nothing to do"
  summary
  exit 0
fi
# Daemons up but node DOWN/DRAINED (e.g. after a test drained it): resume in place.
if [[ "${FORCE_RECONFIG:-0}" != 1 ]] && running slurmctld \
   && running slurmd && running munged; then
  case "$(node_state)" in
    down*|drain*|drng*|fail*)
      log "node $NODE is $(node_state); resuming it"
      scontrol update nodename="$NODE" state=resume 2>/dev/null || true
      for _ in $(seq 1 20); do cluster_healthy && break; sleep 0.5; done
      if cluster_healthy; then
        log "node $NODE resumed ($(node_state))"
        summary
        exit 0
      fi ;;
  esac
fi

# ----------------------------------------------------------------- install
need_pkgs=()
for p in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  log "installing: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101 = don't let package postinst scripts try to start services
  # (there is no systemd/init here; we start daemons ourselves below)
  policy_created=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  ((policy_created)) && rm -f /usr/sbin/policy-rc.d
  log "install done after $(( $(date +%s) - t0 ))s"
fi

# ------------------------------------------------------------------- munge
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge

if ! running munged || ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  pkill_pids=$(pids_of munged)
  [[ -n "$pkill_pids" ]] && kill $pkill_pids 2>/dev/null || true
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 1 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n </dev/null | unmunge >/dev/null || die "munged not working (see /var/log/munge/munged.log)"
fi

# -------------------------------------------------------------- slurm.conf
NCPU="$(nproc)"
TOTAL_MB="$(free -m | awk '/^Mem:/{print $2}')"
# leave ~10% (at least 512 MB) for the OS
REAL_MB=$(( TOTAL_MB - (TOTAL_MB / 10 > 512 ? TOTAL_MB / 10 : 512) ))

mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
new_conf="$(cat <<EOF
# Generated by tests/slurm/start_cluster.sh -- single-node test cluster.
ClusterName=local
# address given explicitly so nothing depends on the node name being resolvable
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also = minimum delay before a requeued job may start again
# (Slurm default 120 s)
AuthInfo=cred_expire=${CRED_EXPIRE}
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Run the scheduling loops every second (defaults: 60 s main, 30 s backfill).
# Otherwise a requeued job whose BeginTime has passed can sit PENDING for up
# to ~30-60 s until the next periodic pass.
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without DefMemPerCPU a job with no --mem gets ALL node memory (=> no sharing)
DefMemPerCPU=1024
JobRequeue=1
ReturnToService=2
SlurmctldTimeout=10
SlurmdTimeout=10
InactiveLimit=0
KillWait=5
# how long finished jobs stay visible to squeue/scontrol (and to tests/slurm/bin/sacct)
MinJobAge=300
Waittime=0
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${NCPU} RealMemory=${REAL_MB} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)"
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
  log "writing $CONF"
  printf '%s\n' "$new_conf" >"$CONF"
  chmod 0644 "$CONF"
fi

# ---------------------------------------------------------------- daemons
# A half-alive cluster (e.g. only one daemon up, or unresponsive): restart both.
for d in slurmd slurmctld; do
  pids=$(pids_of "$d")
  if [[ -n "$pids" ]]; then
    log "stopping stale $d ($pids)"
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 50); do running "$d" || break; sleep 0.1; done
    pids=$(pids_of "$d")
    [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null || true
  fi
done

log "starting slurmctld"
slurmctld || die "slurmctld failed to start (see $LOG_DIR/slurmctld.log)"
for _ in $(seq 1 100); do timeout 5 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
timeout 5 scontrol ping | grep -q UP || die "slurmctld not responding (see $LOG_DIR/slurmctld.log)"

log "starting slurmd"
slurmd || die "slurmd failed to start (see $LOG_DIR/slurmd.log)"

# -------------------------------------------------------------- wait ready
deadline=$(( $(date +%s) + START_TIMEOUT ))
state=""
while (( $(date +%s) < deadline )); do
  state="$(node_state)"
  case "$state" in
    idle|mix|alloc) break ;;
    down*|drain*|drng*|fail*)
      # stale state from a previous run (StateSaveLocation); bring it back
      scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$state" in
  idle|mix|alloc) ;;
  *) tail -n 20 "$LOG_DIR/slurmd.log" "$LOG_DIR/slurmctld.log" >&2 || true
     die "node $NODE not idle after ${START_TIMEOUT}s (state='$state')" ;;
esac

log "node $NODE is $state; running a test job"
remaining=$(( deadline - $(date +%s) )); (( remaining < 10 )) && remaining=10
out="$(timeout "$remaining" srun -N1 -n1 -t 1 hostname 2>&1)" \
  || { tail -n 20 "$LOG_DIR/slurmd.log" >&2 || true; die "test job failed: $out"; }
log "test job ran on: $out"
log "cluster ready after $(( $(date +%s) - t0 ))s"
summary
