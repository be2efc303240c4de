#!/usr/bin/env bash
# Shows what the local environment holds (nodes of every architecture, the multi-arch base image), then
# builds the blog example and rolls it out to its Deployment.
set -euo pipefail
dir=${1:-.dev}
# shellcheck source=/dev/null
source "$dir/env.sh"
echo "== nodes (kubectl get nodes)"
kubectl get nodes -L kubernetes.io/arch,archway.dev/arm-variant,emulate.archway.dev/arm64,emulate.archway.dev/arm
echo
echo "== base image index (skopeo inspect --raw docker://$ARCHWAY_REGISTRY/library/busybox:latest)"
skopeo inspect --raw --cert-dir "$ARCHWAY_REGISTRY_CERT_DIR" "docker://$ARCHWAY_REGISTRY/library/busybox:latest" \
  | python3 -c 'import json,sys
index = json.load(sys.stdin)
print("mediaType:", index.get("mediaType"))
for m in index.get("manifests", []):
    p = m.get("platform", {})
    plat = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
    print("  %-14s %s" % (plat, m["digest"]))'
echo
echo "== archway operator (kubectl get pods -n archway-system -o wide)"
kubectl get pods -n archway-system -o wide
echo
pods='custom-columns=POD:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,WAITING:.status.containerStatuses[0].state.waiting.reason,RUNS:.status.containerStatuses[0].imageID'
echo "== the blog Deployment before the build (examples/blog/deployment.yaml: one image by tag, no tolerations)"
# Another run on a running environment starts afresh: re-applying the Deployment over archway's digest
# would be a rewrite archway reports and does not undo (README, Rollout).
kubectl delete multiarchbuild/blog deployment/blog --ignore-not-found --wait=true >/dev/null
sed "s#registry.example.com#$ARCHWAY_REGISTRY#g" examples/blog/deployment.yaml | kubectl apply -f -
kubectl get deployment blog -o wide
sleep 3
kubectl get pods -l app=blog -o "$pods"
echo
echo "== the blog example: apply, wait for Ready (kubectl wait --for=condition=Ready mab/blog)"
kubectl create configmap blog-context --from-file=examples/blog/context --dry-run=client -o yaml | kubectl apply -f -
sed "s#registry.example.com#$ARCHWAY_REGISTRY#g" examples/blog/multiarchbuild.yaml | kubectl apply -f -
if ! kubectl wait --for=condition=Ready mab/blog --timeout=600s; then
  kubectl describe mab blog
  exit 1
fi
kubectl get mab blog
echo
kubectl get mab blog -o jsonpath='{range .status.platforms[*]}{.platform}{"\t"}{.mode}{"\t"}{.builder}{"\t"}{.node}{"\t"}{.phase}{"\t"}{.digest}{"\n"}{end}' \
  | column -t -N PLATFORM,MODE,BUILDER,NODE,PHASE,DIGEST
# Why a platform did not get the first choice (buildah, native): the Pi's buildah image does not exist.
kubectl get mab blog -o jsonpath='{range .status.platforms[?(@.placementReason)]}{.platform}: {.placementReason}{"\n"}{end}'
echo
echo "== the blog Deployment after: rolled out to the index digest, one pod per node kind, each running its node's child"
kubectl get deployment blog -o wide
kubectl get pods -l app=blog -o "$pods"
echo
echo "== each pod serves its build's \`uname -m\` (curl http://POD_IP/arch): the image runs natively or under qemu"
kubectl rollout status deployment/blog --timeout=120s
kubectl get pods -l app=blog --field-selector=status.phase=Running \
  -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.podIP}{"\n"}{end}' |
  while read -r node ip; do
    printf '%-10s %-16s %s\n' "$node" "$ip" "$(curl -s --max-time 5 "http://$ip/arch")"
  done
echo
echo "== the published index, as skopeo reads it (skopeo inspect --raw docker://$ARCHWAY_REGISTRY/asksven/blog:new)"
skopeo inspect --raw --cert-dir "$ARCHWAY_REGISTRY_CERT_DIR" "docker://$ARCHWAY_REGISTRY/asksven/blog:new" | python3 -m json.tool
echo
echo "The environment stays up: 'source $dir/env.sh' to use kubectl and skopeo against it; 'make dev-down' stops it."
