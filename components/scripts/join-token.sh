#!/usr/bin/env bash
# join-token.sh: on the control plane, mint (prints the join command; no expiry) or delete the bootstrap token TOKEN_ID one worker joins with.
# Safe to re-run: mint replaces a token left under TOKEN_ID with a fresh secret; delete exits 0 when the token (or the cluster) is gone.
# Inputs (env): TOKEN_ACTION (mint | delete | delete-if-reachable: a delete hook, which warns instead of failing when the API server is down),
#   TOKEN_ID, NODE_NAME (the worker), API_WAIT_TIMEOUT_SECONDS, TIMEOUT_SCALE_PERCENT (optional); delete: STDIN (optional), the join command the worker got.
set -euo pipefail

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
action=${TOKEN_ACTION-}
case $action in
  mint | delete | delete-if-reachable) ;;
  *) problem "TOKEN_ACTION='$action': expected mint, delete or delete-if-reachable" ;;
esac
check_input TOKEN_ID is_token_id "expected a bootstrap token id: 6 characters of [a-z0-9]"
check_input NODE_NAME is_node_name "expected a lowercase DNS name such as k8s-w1"
seconds_input API_WAIT_TIMEOUT_SECONDS 1 "$(scaled 60)"
exit_on_problems
id=$TOKEN_ID
secret_name=bootstrap-token-$id # the Secret in kube-system that is the token (kubeadm token create/delete)

if [[ $action != mint ]]; then
  # The join command the worker was given, when there is one: it must carry this token (the secret half is never shown).
  join_line=''
  IFS= read -r -t "$(scaled 10)" join_line || true
  if [[ -n $join_line ]]; then
    given=''
    if [[ $join_line =~ --token\ ([a-z0-9]{6})\.[a-z0-9]{16}( |$) ]]; then given=${BASH_REMATCH[1]}; fi
    [[ $given == "$id" ]] ||
      problem "the join command on STDIN carries token id '${given:-none}', not TOKEN_ID='$id' (the worker's join and this step disagree)"
  fi
  exit_on_problems
fi

if [[ ! -f $ADMIN_CONF ]] || ! have kubectl; then
  if [[ $action == mint ]]; then die "$ADMIN_CONF or kubectl is missing: run kubeadm-init first"; fi
  warn "no $ADMIN_CONF or kubectl on this node: the cluster is gone, and its tokens with it"
  printf 'join token %s of %s: no cluster, nothing to delete\n' "$id" "$NODE_NAME"
  exit 0
fi
have kubeadm || die "kubeadm is not installed (run install-kube-packages first)"

# token_state: sets state to present or absent, or returns 1 with err set when the API server does not answer.
state=''
err=''
token_state() {
  if err=$(kc -n kube-system get secret "$secret_name" -o name --request-timeout="$(scaled 10)s" 2>&1 >/dev/null); then
    state=present
  elif [[ $err == *NotFound* ]]; then
    state=absent
  else
    return 1
  fi
}

# --- wait (bounded) for the API server, e.g. right after a reboot of the control plane ------------
probe_deadline=$((SECONDS + API_WAIT_TIMEOUT_SECONDS))
until token_state; do
  if ((SECONDS >= probe_deadline)); then
    message="the API server did not answer within ${API_WAIT_TIMEOUT_SECONDS}s (API_WAIT_TIMEOUT_SECONDS; ${err//$'\n'/ })"
    if [[ $action == delete-if-reachable ]]; then
      # A delete hook must not block a destroy of a broken cluster.
      warn "$message; the join token $id of $NODE_NAME was NOT deleted (kubeadm token delete $id on the control plane)"
      printf 'join token %s of %s: API server unreachable, not deleted\n' "$id" "$NODE_NAME"
      exit 0
    fi
    die "$message; the join token $id of $NODE_NAME is still there: run this step again once the API server answers"
  fi
  sleep 2
done

# A transient failure (is_transient_api_error) is retried until the deadline: an API server short of CPU fails a
# single request now and then (seen in the lab, where the clean-up died on its one kubeadm token delete while the
# control plane was starting Calico). A delete whose answer was lost finds the token gone when retried: done too.
delete_token() {
  log "deleting the join token $id of $NODE_NAME"
  local give_up=$((SECONDS + API_WAIT_TIMEOUT_SECONDS)) out
  until out=$(timeout -k "$(scaled 5)" "$(scaled 60)" kubeadm token delete "$id" 2>&1); do
    if [[ $out == *"not found"* ]]; then
      log "the join token $id of $NODE_NAME is gone (an earlier attempt deleted it)"
      return 0
    fi
    if ! is_transient_api_error "$out"; then
      printf '%s\n' "$out" >&2
      die "kubeadm token delete $id failed (see above)"
    fi
    if ((SECONDS >= give_up)); then
      printf '%s\n' "$out" >&2
      die "kubeadm token delete $id kept failing for ${API_WAIT_TIMEOUT_SECONDS}s (API_WAIT_TIMEOUT_SECONDS; its last error is above)"
    fi
    warn "kubeadm token delete $id failed (${out//$'\n'/ }); retrying"
    sleep 2
  done
  printf '%s\n' "$out" >&2
}

if [[ $action != mint ]]; then
  if [[ $state == present ]]; then
    delete_token
    printf 'join token %s of %s deleted\n' "$id" "$NODE_NAME"
  else
    log "the join token $id of $NODE_NAME is already gone"
    printf 'join token %s of %s: already gone\n' "$id" "$NODE_NAME"
  fi
  exit 0
fi

# --- mint ------------------------------------------------------------------------------------
# A token under this id is left from an earlier mint whose secret the stack no longer holds: replace it.
if [[ $state == present ]]; then delete_token; fi
generated=$(kubeadm token generate) # kubeadm's own random token; only its secret half is used
[[ $generated =~ ^[a-z0-9]{6}\.([a-z0-9]{16})$ ]] || die "kubeadm token generate did not print a bootstrap token"
token=$id.${BASH_REMATCH[1]}
# --ttl 0: no expiry. A join retried hours later (the join step re-created, this step not) must still find it;
# the worker's join-token-cleanup step deletes it as soon as the worker has joined.
rc=0
join=$(timeout -k "$(scaled 5)" "$(scaled 60)" kubeadm token create "$token" --ttl 0 --print-join-command \
  --description "kubeadm-libvirt: join token of worker $NODE_NAME, deleted once it has joined" 2>&1) || rc=$?
redact() { sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<redacted-token>/g'; }
if ((rc != 0)); then
  printf '%s\n' "$join" | redact >&2
  die "kubeadm token create failed (exit $rc, see above)"
fi
join=$(grep -m 1 '^kubeadm join ' <<<"$join" || true) # (kubeadm may log warnings around it)
if [[ ! $join =~ ^kubeadm\ join\ [^\ ]+\ --token\ ([^\ ]+)\ --discovery-token-ca-cert-hash\ sha256:[0-9a-f]{64}\ *$ ]] ||
  [[ ${BASH_REMATCH[1]} != "$token" ]]; then
  die "kubeadm token create --print-join-command printed no join command for the token it was given (not shown: it holds the token)"
fi
log "minted the join token $id of $NODE_NAME (no expiry; deleted once it has joined)"
printf '%s\n' "$join"
