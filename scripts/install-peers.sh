#!/usr/bin/env bash
# Installs the peer tools that bench/ compares cairn with: restic, borgbackup,
# casync (Debian packages). Skips what is already on PATH, works as root (or
# via sudo when not root), and prints the versions it ends up with.
#
#   bash scripts/install-peers.sh
set -euo pipefail

declare -A BIN=([restic]=restic [borgbackup]=borg [casync]=casync)
missing=()
for pkg in restic borgbackup casync; do
  if command -v "${BIN[$pkg]}" >/dev/null 2>&1; then
    echo "present: $pkg"
  else
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "install-peers: not root and no sudo; install ${missing[*]} by hand" >&2
      exit 1
    fi
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "--- versions"
restic version 2>/dev/null | head -n1 || echo "restic: missing"
borg --version 2>/dev/null | head -n1 || echo "borg: missing"
casync --version 2>/dev/null | head -n1 || echo "casync: missing"
