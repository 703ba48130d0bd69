#!/usr/bin/env bash
# Runs every check and test of lynq, installing what is missing first (scripts/setup.sh).
# The integration tests start their own control plane, MariaDB and PostgreSQL; nothing else is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets -- --test-threads="${LYNQ_TEST_THREADS:-4}"
