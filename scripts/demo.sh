#!/usr/bin/env bash
# The main job on one machine: starts a local control plane and MariaDB, installs lynq's CRDs, runs the
# operator, applies the seed's hub and form, changes rows while printing what appears in the cluster and
# how long it took from the commit, then keeps running for your own statements until Ctrl-C cleans up.
# Pass --exit-after-script to stop after the scripted steps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet
exec target/debug/lynq demo "$@"
