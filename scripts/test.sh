#!/usr/bin/env bash
# Every check the project has, in the order that fails fastest: shell
# scripts, formatting, build, lints, then all tests (unit, golden plans,
# real containerd, systemd-nspawn nodes, moto). This is the README's test
# command and what CI runs (`.ci/run`, with CI set: tests that need a real
# component then fail instead of skipping).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROMETHEUS_CLIENT_VERSION="${PROMETHEUS_CLIENT_VERSION:-0.21.1}"
MOTO_VERSION="5.2.5"
VENV="$ROOT/.venv"
STARTED=$SECONDS
CURRENT_STEP="start"

step() {
	CURRENT_STEP="$1"
	printf '\n==> %s (%ss)\n' "$1" "$((SECONDS - STARTED))"
}

on_exit() {
	local rc=$?
	if [[ $rc -ne 0 ]]; then
		printf '\ntest.sh: FAILED in step "%s" (exit %s) after %ss\n' \
			"$CURRENT_STEP" "$rc" "$((SECONDS - STARTED))" >&2
	fi
}
trap on_exit EXIT

if [[ $EUID -ne 0 ]]; then
	echo "warning: not root; tests needing loop devices, namespaces or nspawn will skip (or fail under CI)" >&2
fi

step "shellcheck"
shellcheck scripts/*.sh .ci/run

step "cargo fmt --check"
cargo fmt --all --check

step "cargo build"
cargo build --workspace --all-targets

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "python venv with moto $MOTO_VERSION"
# The system Python (python3-venv) when there is one: pyenv shims and the
# like may lack venv support.
PYTHON_FOR_VENV="/usr/bin/python3"
[[ -x $PYTHON_FOR_VENV ]] || PYTHON_FOR_VENV="python3"
if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
	rm -rf "$VENV"
	"$PYTHON_FOR_VENV" -m venv "$VENV"
fi
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)"
if [[ $installed != "$MOTO_VERSION" || ! -x $VENV/bin/moto_server ]]; then
	"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
else
	echo "moto $MOTO_VERSION already installed in $VENV"
fi
# An independent parser of the Prometheus text format, for the agent's metrics.
if ! "$VENV/bin/python" -c 'import prometheus_client' 2>/dev/null; then
	"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "prometheus_client==$PROMETHEUS_CLIENT_VERSION"
fi
# The interpreter the moto launcher in tests/ starts moto_server with.
export HPK8S_MOTO_PYTHON="$VENV/bin/python"

step "tests"
tests_rc=0
if cargo nextest --version >/dev/null 2>&1; then
	cargo nextest run --workspace --no-fail-fast || tests_rc=$?
	# nextest does not run doctests.
	cargo test --workspace --doc || tests_rc=$?
else
	cargo test --workspace --no-fail-fast || tests_rc=$?
fi
if [[ $tests_rc -ne 0 ]]; then
	exit "$tests_rc"
fi

step "nothing left behind"
# The harness must clean up after itself: no test network namespace, loop
# device, mount or helper process may survive the test run.
# Detached helpers (the kubeadm stand-in's delayed Ready) get a few seconds.
leftovers() {
	ip netns list 2>/dev/null | grep -E '^hpk8s-' || true
	# Test LAN bridges and veths (harness::cluster_bed::lan).
	ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^hpk8s-' || true
	losetup -a 2>/dev/null | grep -E 'hpk8s' || true
	grep -E 'hpk8s-' /proc/self/mountinfo || true
	pgrep -af 'moto_server|hpk8s_moto|systemd-nspawn|target/debug/kubeadm' || true
}
for _ in 1 2 3 4 5 6 7 8 9 10; do
	left="$(leftovers)"
	[[ -z $left ]] && break
	sleep 1
done
if [[ -n $left ]]; then
	printf 'tests left these behind:\n%s\n' "$left" >&2
	exit 1
fi

CURRENT_STEP="done"
printf '\ntest.sh: OK: shellcheck, fmt, build, clippy and all tests passed in %ss\n' "$((SECONDS - STARTED))"
