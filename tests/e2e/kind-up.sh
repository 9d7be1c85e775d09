#!/usr/bin/env bash
# Bring up the cluster of kpilot's kind tier (tests/e2e/test_kind.py) and install what it tests:
# Knative Serving with Kourier (reference notes, section 9), then the operator image built from
# this checkout with the shipped manifests. Idempotent: run it again to rebuild and redeploy the
# operator. Needs docker, kind and kubectl, and internet access for the node image, Knative's
# release manifests and their images.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=$(sed -n 's/^name: *//p' kind-config.yaml)
KNATIVE_VERSION=${KNATIVE_VERSION:-1.23.0}
IMAGE=kpilot-operator:e2e          # the tag tests/e2e/overlay puts on the Deployment
NODE_PORT=31080                    # kind-config.yaml's containerPort

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is not on PATH" >&2; exit 2; }
done
k() { kubectl --context "kind-$CLUSTER" "$@"; }
# kind-config.yaml's node image (Kubernetes 1.34) was released with kind v0.30.0: an older kind may
# not boot it (kind supports each node image with the release it came with).
kind_version=$(kind version | sed -n 's/^kind v\([0-9]*\.[0-9]*\).*/\1/p')
if [ -z "$kind_version" ] || [ "$(printf '%s\n' 0.30 "$kind_version" | sort -V | head -1)" != 0.30 ]; then
  echo "kind-up: kind v0.30 or newer is needed for kindest/node:v1.34.0 (found: $(kind version))" >&2
  exit 2
fi

if ! kind get clusters 2>/dev/null | grep -x "$CLUSTER" >/dev/null; then
  kind create cluster --config kind-config.yaml --wait 180s
fi

serving=https://github.com/knative/serving/releases/download/knative-v$KNATIVE_VERSION
kourier=https://github.com/knative-extensions/net-kourier/releases/download/knative-v$KNATIVE_VERSION
k apply -f "$serving/serving-crds.yaml"
k wait --for=condition=Established --timeout=120s \
  crd/services.serving.knative.dev crd/revisions.serving.knative.dev \
  crd/podautoscalers.autoscaling.internal.knative.dev
k apply -f "$serving/serving-core.yaml"
k apply -f "$kourier/kourier.yaml"
# Knative's ConfigMap-validating webhook (failurePolicy Fail) must be serving before the patches.
k -n knative-serving wait --for=condition=Available --timeout=300s deployment/webhook
k -n knative-serving patch configmap/config-network --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
k -n knative-serving patch configmap/config-domain --type merge -p '{"data":{"127.0.0.1.sslip.io":""}}'
# Kourier's gateway as a NodePort that kind-config.yaml publishes on the host.
k -n kourier-system patch service/kourier --type json -p "[
  {\"op\":\"replace\",\"path\":\"/spec/type\",\"value\":\"NodePort\"},
  {\"op\":\"add\",\"path\":\"/spec/ports/0/nodePort\",\"value\":$NODE_PORT}]"
k -n knative-serving wait --for=condition=Available --timeout=300s deployment --all
k -n kourier-system wait --for=condition=Available --timeout=300s deployment --all

docker build -f operator/Dockerfile -t "$IMAGE" .
# With Docker's containerd image store (the default from Docker 29) `kind load docker-image` fails
# ("content digest ... not found"): then through an archive of this platform's image alone.
if ! kind load docker-image "$IMAGE" --name "$CLUSTER"; then
  arch=$(docker info -f '{{.Architecture}}' | sed 's/x86_64/amd64/;s/aarch64/arm64/')
  docker image save --platform "linux/$arch" "$IMAGE" | kind load image-archive /dev/stdin --name "$CLUSTER"
fi
k apply -f manifests/peering.yaml
k apply -k tests/e2e/overlay
k -n kpilot-system rollout restart deployment/kpilot-operator   # pick up a rebuilt image
k -n kpilot-system rollout status deployment/kpilot-operator --timeout=180s
echo "kind-up: cluster $CLUSTER ready (context kind-$CLUSTER)"
