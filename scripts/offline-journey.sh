#!/usr/bin/env bash
# The post -> route -> draft journey once more, inside a network namespace that has only loopback: the proof
# that nothing Relay does needs the network (or could reach it). Run by `make test`. Needs root or
# unprivileged user namespaces; without either it is skipped, except in CI, where that fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
if unshare -n true 2>/dev/null; then
  ns=(unshare -n)
elif unshare -rn true 2>/dev/null; then
  ns=(unshare -rn)
else
  echo "offline journey: cannot create a network namespace here (unshare); skipped" >&2
  [ -z "${CI:-}" ] && exit 0 || exit 1
fi
echo "offline journey: post -> route -> draft with no network (${ns[*]})"
exec env -u RELAY_TEST_POSTGRES_URL -u RELAY_TEST_REDIS_URL RELAY_OFFLINE_JOURNEY=1 "${ns[@]}" sh -c \
  'if command -v ip >/dev/null; then ip link set lo up; fi; exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e/test_offline_journey.py'
