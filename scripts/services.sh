#!/usr/bin/env bash
# Start the local PostgreSQL and Redis used by the integration tests when they are asked for and not running.
set -euo pipefail

pg_up() { python3 - "$1" <<'PY'
import socket, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1].replace("postgresql+psycopg", "postgresql"))
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex((u.hostname or "127.0.0.1", u.port or 5432)) == 0 else 1)
PY
}

if [ -n "${RELAY_TEST_POSTGRES_URL:-}" ] && ! pg_up "$RELAY_TEST_POSTGRES_URL"; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_up "$RELAY_TEST_POSTGRES_URL" && break; sleep 1; done
  fi
  pg_up "$RELAY_TEST_POSTGRES_URL" || { echo "PostgreSQL is not reachable at $RELAY_TEST_POSTGRES_URL" >&2; exit 1; }
fi

if [ -n "${RELAY_TEST_REDIS_URL:-}" ] && ! (redis-cli -u "$RELAY_TEST_REDIS_URL" ping >/dev/null 2>&1); then
  if command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no || true
    for _ in $(seq 1 30); do redis-cli -u "$RELAY_TEST_REDIS_URL" ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  redis-cli -u "$RELAY_TEST_REDIS_URL" ping >/dev/null 2>&1 || { echo "Redis is not reachable at $RELAY_TEST_REDIS_URL" >&2; exit 1; }
fi
exit 0
