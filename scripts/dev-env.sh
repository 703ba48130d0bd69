#!/usr/bin/env bash
# Starts or stops the local environment by hand (the one tests, benchmarks and the demo use):
#   scripts/dev-env.sh up     # prints KUBECONFIG and the two database URLs
#   scripts/dev-env.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
state=target/lynq-env
case "${1:-}" in
  up)
    bash scripts/setup.sh
    cargo build --quiet
    mkdir -p "$state"
    rm -f "$state/env.json"
    nohup target/debug/lynq env up --state-dir "$state" --log-dir "$state/logs" >"$state/supervisor.out" 2>&1 &
    for _ in $(seq 1 1200); do
      [ -s "$state/env.json" ] && break
      kill -0 $! 2>/dev/null || { cat "$state/supervisor.out" >&2; exit 1; }
      sleep 0.1
    done
    [ -s "$state/env.json" ] || { echo "environment did not start; see $state/supervisor.out" >&2; exit 1; }
    python3 - "$state/env.json" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
print(f"export KUBECONFIG={info['kubeconfig']}")
print(f"export LYNQ_MYSQL_URL={info['mysqlUrl']}")
print(f"export LYNQ_POSTGRES_URL={info['postgresUrl']}")
print(f"# logs: {info['logDir']}   stop with: scripts/dev-env.sh down")
PY
    ;;
  down)
    target/debug/lynq env down --state-dir "$state"
    ;;
  *)
    echo "usage: $0 up|down" >&2; exit 2 ;;
esac
