#!/usr/bin/env bash
# Stop the single-node test cluster started by start_cluster.sh.
# Cancels all jobs (waiting up to ~15 s for them to end, so no job processes
# are orphaned), then stops slurmd and slurmctld. munged is left running.
# Job state survives in /var/spool/slurmctld (cancelled jobs stay visible for
# MinJobAge after the next start).
set -uo pipefail

log() { echo "[stop_cluster] $*" >&2; }
# PIDs of live (non-zombie) processes whose command name is exactly $1
pids_of() { { ps -C "$1" -o pid=,stat= 2>/dev/null || true; } | awk '$2 !~ /^Z/ {print $1}'; }
running() { [[ -n "$(pids_of "$1")" ]]; }

[[ "$(id -u)" == 0 ]] || { log "ERROR: must run as root"; exit 1; }

if command -v squeue >/dev/null 2>&1 && running slurmctld; then
  ids=$(timeout 10 squeue -h -o '%i' 2>/dev/null | tr '\n' ' ' || true)
  if [[ -n "${ids// /}" ]]; then
    log "cancelling jobs: $ids"
    timeout 10 scancel $ids 2>/dev/null || true
    for _ in $(seq 1 75); do
      [[ -z "$(timeout 5 squeue -h -o '%i' 2>/dev/null)" ]] && break
      sleep 0.2
    done
  fi
fi

for d in slurmd slurmctld; do
  pids=$(pids_of "$d")
  [[ -z "$pids" ]] && continue
  log "stopping $d ($(echo $pids))"
  kill $pids 2>/dev/null || true
  for _ in $(seq 1 100); do running "$d" || break; sleep 0.1; done
  pids=$(pids_of "$d")
  if [[ -n "$pids" ]]; then
    log "$d did not exit after 10 s, sending SIGKILL"
    kill -9 $pids 2>/dev/null || true
  fi
done
# step daemons left behind by jobs that did not end in time
pids=$(pids_of slurmstepd)
if [[ -n "$pids" ]]; then
  log "killing leftover slurmstepd ($(echo $pids))"
  kill -9 $pids 2>/dev/null || true
fi
log "stopped"
exit 0
