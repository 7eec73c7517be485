#!/usr/bin/env bash
# A local Kubernetes for homegrown, for anyone with Docker: a kind cluster running Kubeflow
# Pipelines (standalone), Kubeflow Trainer with the torch-distributed runtime, KServe in Serverless
# (Knative) mode for the deploy step, the two homegrown images and the homegrown chart (MLflow,
# bundled Postgres and SeaweedFS).
#
#   infra/cluster-up.sh                 # or: make cluster-up   (first run ~15 min; reruns are safe)
#   BUILD_TRAINER=0 infra/cluster-up.sh # CPU laptops: skip the multi-GB CUDA trainer image
#   infra/cluster-down.sh               # delete it all
#
# Needs docker (daemon running; give it roughly 8 GB RAM and 25 GB disk), kind, kubectl, helm >= 3.8
# (OCI charts) and git (kubectl fetches KFP's kustomize manifests with it).
# Every kubectl/helm call names the kind context, so your current context is never used.
set -euo pipefail

# ---- pinned versions -------------------------------------------------------------------------
KIND_VERSION="v0.33.0"
# From kind v0.33.0's release notes; keep equal to the image in infra/kind.yaml.
KIND_NODE_IMAGE="kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0"
# kubeflow/pipelines tag whose kustomize manifests are applied (the kfp SDK is 2.17).
KFP_VERSION="2.17.2"
# Kubeflow Trainer Helm chart: v2.3.x, the API the TrainJob launcher's models (kubeflow-trainer-api
# 2.3, spec.runtimePatches) are generated from.
TRAINER_VERSION="2.3.0"
TRAINER_CHART="oci://ghcr.io/kubeflow/charts/kubeflow-trainer"
# KServe v0.20.0 (the CRD the deploy step's objects are validated against, the kserve SDK 0.20 in the
# lock) in Serverless mode: canaryTrafficPercent takes effect only on Knative revisions. Its
# Knative-mode dependencies at the versions KServe lists (kserve-deps.env): cert-manager for the
# webhook certificates, Knative Serving, and Kourier as Knative's networking layer (lighter than
# Istio on kind; KServe documents both).
KSERVE_VERSION="v0.20.0"
KSERVE_CHARTS="oci://ghcr.io/kserve/charts"
CERT_MANAGER_VERSION="v1.17.0"
KNATIVE_SERVING_VERSION="v1.21.1"
KOURIER_VERSION="v1.21.0"

# ---- settings (override from the environment) -----------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_NAME="${CLUSTER_NAME:-homegrown}"
# KFP standalone runs every pipeline pod in `kubeflow`; the chart goes where the steps run.
NAMESPACE="${NAMESPACE:-kubeflow}"
VERSION="${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml")}"
STEPS_IMAGE="${STEPS_IMAGE:-homegrown/steps:$VERSION}"
TRAINER_IMAGE="${TRAINER_IMAGE:-homegrown/trainer:$VERSION}"
BUILD_TRAINER="${BUILD_TRAINER:-1}"
CHART_DIR="${CHART_DIR:-$ROOT/charts/homegrown}"
CHART_VALUES="${CHART_VALUES:-$ROOT/infra/values-kind.yaml}"
# Names release `homegrown` of the chart gives the MLflow Service and its admin-login Secret.
MLFLOW_SERVICE="${MLFLOW_SERVICE:-homegrown-mlflow}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_AUTH_SECRET="${MLFLOW_AUTH_SECRET:-homegrown-mlflow}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-20m}"

CONTEXT="kind-$CLUSTER_NAME"
KFP_MANIFESTS="github.com/kubeflow/pipelines/manifests/kustomize"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'cluster-up: %s\n' "$*" >&2; exit 1; }
k() { kubectl --context "$CONTEXT" "$@"; }
h() { helm --kube-context "$CONTEXT" "$@"; }

install_hint() {
  case "$1" in
    docker) echo "https://docs.docker.com/engine/install/" ;;
    kind) echo "https://kind.sigs.k8s.io/docs/user/quick-start/#installation ($KIND_VERSION)" ;;
    kubectl) echo "https://kubernetes.io/docs/tasks/tools/" ;;
    helm) echo "https://helm.sh/docs/intro/install/ (v3.8 or newer)" ;;
    git) echo "your package manager (kubectl fetches KFP's manifests with git)" ;;
  esac
}

check_prerequisites() {
  local missing=() tool
  for tool in docker kind kubectl helm git; do
    command -v "$tool" > /dev/null || missing+=("  $tool: $(install_hint "$tool")")
  done
  if ((${#missing[@]})); then
    printf 'cluster-up: missing prerequisites; install them and rerun:\n' >&2
    printf '%s\n' "${missing[@]}" >&2
    exit 1
  fi
  docker info > /dev/null 2>&1 || die "docker is installed but its daemon does not answer (docker info): start Docker"
  [[ -n "$VERSION" ]] || die "could not read the version from $ROOT/pyproject.toml; set VERSION=..."
  [[ -f "$CHART_DIR/Chart.yaml" ]] || die "no chart at $CHART_DIR (set CHART_DIR=...)"
  local kind_version
  kind_version="$(kind version | awk '{print $2}')"
  [[ "$kind_version" == "$KIND_VERSION" ]] \
    || printf 'cluster-up: warning: kind %s found; %s is pinned because %s was built for it\n' \
      "$kind_version" "$KIND_VERSION" "$KIND_NODE_IMAGE" >&2
}

create_cluster() {
  if kind get clusters 2> /dev/null | grep -qx "$CLUSTER_NAME"; then
    say "kind cluster $CLUSTER_NAME exists: reusing it"
  else
    say "creating kind cluster $CLUSTER_NAME ($KIND_NODE_IMAGE)"
    kind create cluster --name "$CLUSTER_NAME" --config "$ROOT/infra/kind.yaml" \
      --image "$KIND_NODE_IMAGE" --wait 5m
  fi
}

install_kfp() {
  # The standalone install of the KFP docs (operator-guides/installation), with the
  # platform-agnostic overlay their local-cluster page gives for kind.
  say "installing Kubeflow Pipelines $KFP_VERSION (standalone, platform-agnostic)"
  k apply -k "$KFP_MANIFESTS/cluster-scoped-resources?ref=$KFP_VERSION"
  k wait --for condition=established --timeout=60s crd/applications.app.k8s.io
  k apply -k "$KFP_MANIFESTS/env/platform-agnostic?ref=$KFP_VERSION"
}

install_trainer() {
  # The v2.3.0 release notes install with Helm (v2.3 moved the CRDs into the chart); only the
  # torch-distributed runtime is needed. The chart brings JobSet along.
  say "installing Kubeflow Trainer $TRAINER_VERSION with the torch-distributed runtime"
  h upgrade --install kubeflow-trainer "$TRAINER_CHART" --version "$TRAINER_VERSION" \
    --namespace kubeflow-system --create-namespace \
    --set runtimes.torchDistributed.enabled=true --wait --timeout "$WAIT_TIMEOUT"
  local tries=0
  until k get clustertrainingruntime torch-distributed > /dev/null 2>&1; do
    tries=$((tries + 1))
    ((tries <= 60)) || die "ClusterTrainingRuntime torch-distributed did not appear within 5 minutes"
    sleep 5
  done
}

wait_for() {  # wait_for WHAT COMMAND...: retry a check for 5 minutes
  local what="$1" tries=0
  shift
  until "$@" > /dev/null 2>&1; do
    tries=$((tries + 1))
    ((tries <= 60)) || die "$what did not appear within 5 minutes"
    sleep 5
  done
}

install_kserve() {
  say "installing cert-manager $CERT_MANAGER_VERSION (KServe's webhook certificates)"
  k apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
  k --namespace cert-manager wait deployment --all --for condition=Available --timeout "$WAIT_TIMEOUT"

  say "installing Knative Serving $KNATIVE_SERVING_VERSION with Kourier $KOURIER_VERSION"
  local knative="https://github.com/knative/serving/releases/download/knative-$KNATIVE_SERVING_VERSION"
  k apply -f "$knative/serving-crds.yaml"
  k wait --for condition=established --timeout=60s crd/services.serving.knative.dev
  k apply -f "$knative/serving-core.yaml"
  k apply -f "https://github.com/knative/net-kourier/releases/download/knative-$KOURIER_VERSION/kourier.yaml"
  k --namespace knative-serving patch configmap/config-network --type merge \
    --patch '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
  # The deploy step sets tolerations and a node selector on the predictor (the GPU nodes'):
  # Knative rejects those pod-spec fields unless these flags are on.
  k --namespace knative-serving patch configmap/config-features --type merge \
    --patch '{"data":{"kubernetes.podspec-tolerations":"enabled","kubernetes.podspec-nodeselector":"enabled","kubernetes.podspec-affinity":"enabled"}}'
  k --namespace knative-serving wait deployment --all --for condition=Available --timeout "$WAIT_TIMEOUT"

  say "installing KServe $KSERVE_VERSION (Serverless mode, its default)"
  h upgrade --install kserve-crd "$KSERVE_CHARTS/kserve-crd" --version "$KSERVE_VERSION" \
    --namespace kserve --create-namespace --wait --timeout "$WAIT_TIMEOUT"
  h upgrade --install kserve "$KSERVE_CHARTS/kserve-resources" --version "$KSERVE_VERSION" \
    --namespace kserve --create-namespace --wait --timeout "$WAIT_TIMEOUT"
  # the deploy step's default runtime (serve.runtime)
  wait_for "ClusterServingRuntime kserve-huggingfaceserver" k get clusterservingruntime kserve-huggingfaceserver
}

build_and_load() {  # build_and_load steps|trainer IMAGE
  local dockerfile="$ROOT/docker/$1.Dockerfile" image="$2" revision source_url
  revision="$(git -C "$ROOT" rev-parse HEAD 2> /dev/null || echo unknown)"
  source_url="$(git -C "$ROOT" config --get remote.origin.url 2> /dev/null || echo unknown)"
  say "building $image from docker/$1.Dockerfile"
  docker build --file "$dockerfile" --tag "$image" \
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$revision" --build-arg "SOURCE_URL=$source_url" \
    "$ROOT"
  say "loading $image into kind (skipped by kind when the node has it already)"
  kind load docker-image "$image" --name "$CLUSTER_NAME"
}

build_and_load_images() {
  build_and_load steps "$STEPS_IMAGE"
  if [[ "$BUILD_TRAINER" == 1 ]]; then
    build_and_load trainer "$TRAINER_IMAGE"
  fi
}

install_chart() {
  say "installing charts/homegrown into namespace $NAMESPACE"
  k create namespace "$NAMESPACE" --dry-run=client --output yaml | k apply -f -
  h upgrade --install homegrown "$CHART_DIR" --namespace "$NAMESPACE" --create-namespace \
    --values "$CHART_VALUES" \
    --set-string "steps.image.repository=${STEPS_IMAGE%:*}" --set-string "steps.image.tag=${STEPS_IMAGE##*:}" \
    --set-string "steps.trainImage.repository=${TRAINER_IMAGE%:*}" \
    --set-string "steps.trainImage.tag=${TRAINER_IMAGE##*:}" \
    --wait --timeout "$WAIT_TIMEOUT"
}

wait_for_kfp() {
  say "waiting for Kubeflow Pipelines to come up (a few minutes on a first install)"
  k --namespace kubeflow wait deployment --all --for condition=Available --timeout "$WAIT_TIMEOUT"
}

print_next_steps() {
  local train_image_note=""
  [[ "$BUILD_TRAINER" == 1 ]] || train_image_note=" (the trainer image was not built: CPU configs only)"
  cat << EOF

homegrown is up on kind cluster $CLUSTER_NAME (kubectl context $CONTEXT).

  KFP UI and API:  kubectl --context $CONTEXT -n kubeflow port-forward svc/ml-pipeline-ui 8080:80
                   then http://localhost:8080
  MLflow:          kubectl --context $CONTEXT -n $NAMESPACE port-forward svc/$MLFLOW_SERVICE $MLFLOW_PORT:$MLFLOW_PORT
                   then http://localhost:$MLFLOW_PORT, user admin, password:
                   kubectl --context $CONTEXT -n $NAMESPACE get secret $MLFLOW_AUTH_SECRET -o jsonpath='{.data.MLFLOW_TRACKING_PASSWORD}' | base64 -d

Run the pipeline (with the KFP port-forward running):
  kind has no GPUs, so use the CPU config$train_image_note:
    make corpus && infra/upload-corpus.sh
    .venv/bin/homegrown submit infra/cpu-run.yaml --host http://localhost:8080
  On a cluster with NVIDIA GPUs (device plugin installed, same install steps):
    .venv/bin/homegrown submit pipelines/configs/gpu.yaml --host http://localhost:8080

Delete it all: infra/cluster-down.sh
EOF
}

main() {
  check_prerequisites
  create_cluster
  install_kfp
  install_trainer
  install_kserve
  build_and_load_images
  wait_for_kfp
  install_chart
  print_next_steps
}

main "$@"
