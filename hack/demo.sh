#!/usr/bin/env bash
# Shows what the local environment holds: nodes of every architecture and the multi-arch base image.
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
echo "The environment stays up: 'source $dir/env.sh' to use kubectl and skopeo against it; 'make dev-down' stops it."
