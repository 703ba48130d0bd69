#!/usr/bin/env bash
# Runs every check and test of lynq, installing what is missing first (scripts/setup.sh).
# The integration tests start their own control plane, MariaDB and PostgreSQL; the source modules'
# end-to-end tests get private databases from a `lynq env up` supervisor that stops when this script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo build --locked --quiet

# Private databases for the source modules' tests; the coprocess exits (and cleans up) when our end
# of its stdin closes, i.e. when this script exits for any reason.
coproc DATABASES { exec target/debug/lynq env up --no-kubernetes --exit-on-stdin-eof --log-dir target/lynq-env-logs/unit; }
read -r announcement <&"${DATABASES[0]}" || { echo "the database environment did not start" >&2; exit 1; }
eval "$(python3 -c 'import json, sys; i = json.loads(sys.argv[1]); print("export LYNQ_TEST_MYSQL_URL=%s LYNQ_TEST_PG_URL=%s" % (i["mysqlUrl"], i["postgresUrl"]))' "$announcement")"

# Benchmarks are type-checked by clippy above and run only by `cargo bench` (under `cargo test
# --all-targets` their harness-less mains would run whole benchmarks).
cargo test --locked --lib --bins --tests -- --test-threads="${LYNQ_TEST_THREADS:-4}"
