#!/usr/bin/env bash
# Delete the kind cluster infra/cluster-up.sh made, with everything in it (KFP, Trainer, the
# chart, MLflow's and SeaweedFS's data). The images stay in your local Docker.
#   infra/cluster-down.sh          # or: make cluster-down
set -euo pipefail

CLUSTER_NAME="${CLUSTER_NAME:-homegrown}"

command -v kind > /dev/null \
  || { echo "cluster-down: kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)" >&2; exit 1; }

if kind get clusters 2> /dev/null | grep -qx "$CLUSTER_NAME"; then
  kind delete cluster --name "$CLUSTER_NAME"
else
  echo "cluster-down: no kind cluster named $CLUSTER_NAME: nothing to delete"
fi
