#!/usr/bin/env bash
# Installs the hpk8s binary, its config and its systemd unit on this machine.
# Usage: install.sh [PATH_TO_HPK8S_BINARY] [--enable]
set -euo pipefail

bin=${1:-target/release/hpk8s}
enable=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
  echo "install.sh: must run as root" >&2
  exit 1
fi
if [[ ! -x $bin ]]; then
  echo "install.sh: $bin is not an executable (build it with: cargo build --release -p hpk8s)" >&2
  exit 1
fi

install -D -m 0755 "$bin" /usr/local/bin/hpk8s
install -d -m 0700 /etc/hpk8s
if [[ ! -e /etc/hpk8s/config.toml ]]; then
  install -m 0600 "$here/docs/config.example.toml" /etc/hpk8s/config.toml
fi
install -D -m 0644 "$here/systemd/hpk8s-bootstrap.service" /etc/systemd/system/hpk8s-bootstrap.service
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  if [[ $enable == --enable ]]; then
    systemctl enable hpk8s-bootstrap.service
  fi
fi
echo "hpk8s installed: /usr/local/bin/hpk8s; try: hpk8s bootstrap --dry-run"
