#!/usr/bin/env bash
# SageMaker HyperPod OnCreate lifecycle script.
#
# HyperPod copies the lifecycle S3 prefix onto the instance and runs this as
# root from that folder. We install the hpk8s binary shipped next to this
# script and run the whole bootstrap. hpk8s waits for the controller with
# backoff and a generous deadline (no fixed 300 s sleep that rolls back big
# clusters) and never prints the join token.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log=/var/log/hpk8s-on-create.log

install -D -m 0755 "$here/hpk8s" /usr/local/bin/hpk8s
install -d -m 0700 /etc/hpk8s
if [[ -f $here/config.toml && ! -e /etc/hpk8s/config.toml ]]; then
  install -m 0600 "$here/config.toml" /etc/hpk8s/config.toml
fi

# provisioning_parameters.json (Slurm base scripts) lives beside this script;
# hpk8s reads it relative to the current directory.
cd "$here"
exec /usr/local/bin/hpk8s bootstrap 2>>"$log"
