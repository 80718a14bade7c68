#!/usr/bin/env bash
# wait-for-boot.sh: wait until cloud-init has finished and no process holds the dpkg/apt locks.
# Safe to re-run: it only waits and reads state; lock files are never deleted.
# Inputs (env): BOOT_TIMEOUT_SECONDS (integer >= 1), one deadline for the whole wait; TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

# --- inputs (all checked before anything else happens; exit 2 when invalid) -------------------
timeout_scale_input
seconds_input BOOT_TIMEOUT_SECONDS 1
exit_on_problems
timeout_s=$BOOT_TIMEOUT_SECONDS
DEADLINE=$((SECONDS + timeout_s))

# --- cloud-init ------------------------------------------------------------------------------
ci_result='not installed'
if have cloud-init; then
  log "waiting for cloud-init to finish (at most ${timeout_s}s)"
  rc=0
  timeout -k "$(scaled 5)" "$timeout_s" cloud-init status --wait >/dev/null || rc=$?
  case $rc in
    0) ci_result='done' ;;
    124 | 137) # timed out
      cloud-init status --long >&2 || true
      die "cloud-init did not finish within ${timeout_s}s (BOOT_TIMEOUT_SECONDS)" ;;
    *)
      # cloud-init >= 23.4 exits 2 for "done, with recoverable errors" (e.g. deprecated keys).
      ci_status=$(cloud-init status 2>/dev/null || true) # exits 2 again in that case
      if ((rc == 2)) && grep -q '^status: done' <<<"$ci_status"; then
        ci_result='done with warnings'
        warn "cloud-init finished with recoverable errors:"
        cloud-init status --long >&2 || true
      else
        cloud-init status --long >&2 || true
        die "cloud-init reported an error (exit $rc); see the status above and /var/log/cloud-init-output.log"
      fi ;;
  esac
else
  log "cloud-init is not installed; not waiting for it"
fi

# --- apt/dpkg locks --------------------------------------------------------------------------
# bionic's apt (1.6) has no DPkg::Lock::Timeout, so wait here until nobody holds the locks.
# dpkg/apt take fcntl() locks, which `flock -n` cannot see: without fuser, look for processes
# that have a lock file open in /proc instead (that is what fuser does).
# (The steps that run apt also survive a lock taken later: lib/common.sh apt_get_locked.)
APT_LOCKS=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)
lock_holders() { # prints the PIDs that have any existing apt/dpkg lock file open, one per line
  local f existing=() expr=()
  for f in "${APT_LOCKS[@]}"; do
    if [[ -e $f ]]; then existing+=("$f"); expr+=(-o -lname "$f"); fi
  done
  ((${#existing[@]} > 0)) || return 0
  if have fuser; then
    { fuser "${existing[@]}" 2>/dev/null || true; } | tr -s ' ' '\n' | grep -E '^[0-9]+$' | sort -u || true
  else
    { find /proc/[0-9]*/fd -maxdepth 1 -type l \( "${expr[@]:1}" \) -printf '%h\n' 2>/dev/null || true; } \
      | cut -d/ -f3 | sort -u || true
  fi
}

apt_units_running() { # apt-daily/unattended-upgrades run as oneshot units that are "activating" while busy
  local states
  states=$(systemctl is-active apt-daily.service apt-daily-upgrade.service 2>/dev/null || true)
  grep -qx 'activating' <<<"$states"
}

waited=0
free_checks=0
while :; do
  holders=$(lock_holders)
  if [[ -z $holders ]] && ! apt_units_running; then
    # apt-daily runs apt several times in a row: require the locks to be free on two checks.
    free_checks=$((free_checks + 1))
    ((free_checks >= 2)) && break
  else
    free_checks=0
    if ((SECONDS >= DEADLINE)); then
      if [[ -n $holders ]]; then
        log "processes holding apt/dpkg locks:"
        ps -o pid=,args= -p "$(paste -sd, - <<<"$holders")" >&2 || true
      fi
      die "apt/dpkg are still busy after ${timeout_s}s (BOOT_TIMEOUT_SECONDS); lock files were left untouched"
    fi
    if ((waited == 0)); then log "apt/dpkg are busy (PIDs: $(paste -sd' ' - <<<"$holders")); waiting"; fi
    waited=1
  fi
  if ((SECONDS >= DEADLINE)) && ((free_checks > 0)); then break; fi
  sleep 2
done

printf 'boot complete: cloud-init %s, apt/dpkg locks free\n' "$ci_result"
