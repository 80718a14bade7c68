#!/usr/bin/env bash
# os-apt-sources.sh: replace the image's distribution apt sources with OS_APT_SOURCES (e.g. a local mirror), or restore them when it is empty.
# Safe to re-run: files change only when different; originals are kept as FILE.kubeadm-libvirt.disabled and renamed back.
# Inputs (env): OS_APT_SOURCES (one-line apt entries, one per line; empty keeps the image's), OS_APT_KEY_URL (may be empty),
#               APT_LOCK_TIMEOUT_SECONDS (optional, default 300), TIMEOUT_SCALE_PERCENT (optional).
set -euo pipefail

LIST=/etc/apt/sources.list.d/kubeadm-libvirt-os.list
KEYRING=/etc/apt/keyrings/kubeadm-libvirt-os.gpg
# The distribution's own sources: sources.list (Ubuntu up to 22.04), deb822 files (Debian 12, Ubuntu 24.04).
# Other files in sources.list.d (docker.list, kubernetes.list, the user's) are not the OS archive and stay.
DISTRIBUTION_SOURCES=(/etc/apt/sources.list /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/ubuntu.sources)
# apt skips files ending in .disabled without a notice (Dir::Ignore-Files-Silently), so the originals stay quiet.
DISABLED=.kubeadm-libvirt.disabled

# --- inputs (all checked before anything changes; exit 2 when invalid) ------------------------
timeout_scale_input
entries=()
lineno=0
while IFS= read -r line || [[ -n $line ]]; do
  lineno=$((lineno + 1))
  [[ -n ${line//[[:space:]]/} ]] || continue
  read -r -a words <<<"$line"
  url=''
  for word in "${words[@]:1}"; do
    if [[ $word == http://* || $word == https://* ]]; then url=$word && break; fi
  done
  if [[ ${words[0]} != deb ]] || [[ $line == *[\"\'\\\`\$]* ]] || ! is_http_url "$url"; then
    problem "OS_APT_SOURCES line $lineno: '$line': expected 'deb [options] http(s)://URL SUITE [COMPONENT...]'"
    continue
  fi
  entries+=("$line")
done <<<"${OS_APT_SOURCES-}"
key_url=${OS_APT_KEY_URL-}
if [[ -n $key_url ]]; then
  is_http_url "$key_url" || problem "OS_APT_KEY_URL='$key_url': expected an http(s) URL of the archive's public key, or nothing"
  ((${#entries[@]} > 0)) || problem "OS_APT_KEY_URL='$key_url': set, but OS_APT_SOURCES has no entry to use it"
fi
apt_lock_timeout_input
exit_on_problems

make_work_dir
changed=0

if ((${#entries[@]} > 0)); then
  # The key's URL is part of the list file, so a new URL fetches the key again; an unchanged pair does not.
  {
    echo "# Managed by kubeadm-libvirt (os-apt-sources.sh): osAptSources, in place of the image's distribution sources."
    if [[ -n $key_url ]]; then echo "# $KEYRING comes from $key_url"; fi
    printf '%s\n' "${entries[@]}"
  } >"$WORK/os.list"
  if [[ -n $key_url ]]; then
    if [[ -s $KEYRING ]] && cmp -s "$WORK/os.list" "$LIST"; then
      log "$KEYRING is already the key from $key_url"
    else
      install_apt_key "$key_url" "$KEYRING"
      if ((CHANGED)); then changed=1; fi
    fi
  elif [[ -e $KEYRING ]]; then
    log "removing $KEYRING (OS_APT_KEY_URL is empty)"
    rm -f "$KEYRING"
    changed=1
  fi
  put_apt_file "$WORK/os.list" "$LIST"
  if ((CHANGED)); then changed=1; fi
  for f in "${DISTRIBUTION_SOURCES[@]}"; do
    [[ -e $f ]] || continue
    [[ ! -e $f$DISABLED ]] ||
      die "both $f and $f$DISABLED exist: something recreated $f after it was disabled; compare the two, keep the original as $f$DISABLED and remove $f"
    log "disabling $f (kept as $f$DISABLED)"
    mv "$f" "$f$DISABLED"
    changed=1
  done
else
  for f in "$LIST" "$KEYRING"; do
    if [[ -e $f ]]; then
      log "removing $f (OS_APT_SOURCES is empty: the image's own sources again)"
      rm -f "$f"
      changed=1
    fi
  done
  for f in "${DISTRIBUTION_SOURCES[@]}"; do
    [[ -e $f$DISABLED ]] || continue
    [[ ! -e $f ]] || die "both $f and $f$DISABLED exist: compare the two and remove the one that is not the image's original"
    log "restoring $f"
    mv "$f$DISABLED" "$f"
    changed=1
  done
fi

# A changed archive is read now, so a wrong URL, suite or key fails here, naming the input, rather than in a later
# step's package install. apt-get update exits 0 on some fetch failures: its warnings count as failures too.
if ((changed)); then
  log "apt-get update"
  rc=0
  apt_get_locked apt-get -qq update || rc=$? # (its output goes to stderr; a lock held too long ends the step)
  if ((rc != 0)) || grep -qE '^(E:|W: (Failed to fetch|GPG error|The repository))' <<<"$APT_STDERR"; then
    if ((${#entries[@]} > 0)); then
      die "apt-get update failed with OS_APT_SOURCES${key_url:+ and OS_APT_KEY_URL} (see above): ${entries[*]}"
    fi
    die "apt-get update failed with the image's own sources, restored (see above)"
  fi
fi

if ((${#entries[@]} > 0)); then
  printf 'apt sources: %d osAptSources entries in place of the distribution sources\n' "${#entries[@]}"
else
  printf "apt sources: the image's own\n"
fi
