#!/usr/bin/env bash
# The main job on one machine: starts the local environment (control plane, MariaDB, PostgreSQL),
# installs lynq's CRDs and runs the operator against it until Ctrl-C, which cleans everything up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet
eval "$(bash scripts/dev-env.sh up)"
trap 'bash scripts/dev-env.sh down' EXIT
echo "KUBECONFIG=$KUBECONFIG"
echo "MySQL:      $LYNQ_MYSQL_URL"
echo "PostgreSQL: $LYNQ_POSTGRES_URL"
target/debug/lynq crds | kubectl apply --server-side -f -
kubectl apply -f tests/fixtures/seed/lynqhub.yaml -f tests/fixtures/seed/lynqform.yaml
target/debug/lynq run
