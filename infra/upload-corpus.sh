#!/usr/bin/env bash
# Copy a local corpus into the kind cluster's bundled S3 (the chart's SeaweedFS), where
# infra/cpu-run.yaml reads it. Uses the homegrown venv (boto3) through a port-forward.
#   make corpus && infra/upload-corpus.sh [LOCAL_DIR] [S3_URI]
#   (defaults: data/demo-corpus  s3://homegrown/corpora/demo/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOURCE="${1:-$ROOT/data/demo-corpus}"
DEST="${2:-s3://homegrown/corpora/demo/}"
CLUSTER_NAME="${CLUSTER_NAME:-homegrown}"
NAMESPACE="${NAMESPACE:-kubeflow}"
# The chart's bundled S3 and the Secret holding its keys (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY),
# as release `homegrown` names them.
S3_SERVICE="${S3_SERVICE:-homegrown-seaweedfs}"
S3_SERVICE_PORT="${S3_SERVICE_PORT:-8333}"
S3_SECRET="${S3_SECRET:-homegrown-seaweedfs}"
LOCAL_PORT="${LOCAL_PORT:-18333}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

CONTEXT="kind-$CLUSTER_NAME"
die() { printf 'upload-corpus: %s\n' "$*" >&2; exit 1; }
k() { kubectl --context "$CONTEXT" --namespace "$NAMESPACE" "$@"; }

command -v kubectl > /dev/null || die "kubectl is not installed (https://kubernetes.io/docs/tasks/tools/)"
[[ -x "$PYTHON" ]] || die "no Python at $PYTHON: run \`make install\` (or set PYTHON=...)"
[[ -d "$SOURCE" ]] || die "no directory $SOURCE (the demo corpus: \`make corpus\`)"
[[ "$DEST" == s3://* ]] || die "destination must be an s3:// URI, got $DEST"

secret_key() { k get secret "$S3_SECRET" --output "jsonpath={.data.$1}" | base64 --decode; }
AWS_ACCESS_KEY_ID="$(secret_key AWS_ACCESS_KEY_ID)" || die "cannot read Secret $NAMESPACE/$S3_SECRET"
AWS_SECRET_ACCESS_KEY="$(secret_key AWS_SECRET_ACCESS_KEY)" || die "cannot read Secret $NAMESPACE/$S3_SECRET"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export AWS_ENDPOINT_URL="http://127.0.0.1:$LOCAL_PORT" AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

# Not through k(): backgrounding a function forks a subshell, and killing that would leave
# the port-forward running; a plain command is exec'd, so $! is kubectl itself.
kubectl --context "$CONTEXT" --namespace "$NAMESPACE" port-forward "svc/$S3_SERVICE" "$LOCAL_PORT:$S3_SERVICE_PORT" > /dev/null &
forward=$!
trap 'kill "$forward" 2> /dev/null || true' EXIT
for _ in $(seq 1 30); do
  (: < "/dev/tcp/127.0.0.1/$LOCAL_PORT") 2> /dev/null && break
  kill -0 "$forward" 2> /dev/null || die "port-forward to svc/$S3_SERVICE failed (is the chart installed?)"
  sleep 1
done

"$PYTHON" - "$SOURCE" "$DEST" << 'PY'
import sys

import boto3

from components import storage

source, dest = sys.argv[1], sys.argv[2]
bucket = dest[len("s3://"):].split("/", 1)[0]
s3 = boto3.client("s3")
if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
    s3.create_bucket(Bucket=bucket)
storage.upload_dir(source, dest)
print(f"uploaded {source} -> {dest} ({len(storage.list_files(dest))} files)")
PY
