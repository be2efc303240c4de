#!/usr/bin/env bash
# Benchmark of the blog example on the local environment (make bench): time from apply to Ready, each
# platform's build time by mode, the operator's peak RSS, and the API requests the operator made per
# platform build (from the apiserver's audit log, which records the operator's ServiceAccount only).
# Prints figures; asserts nothing.
set -euo pipefail
dir=${1:-.dev}
# shellcheck source=/dev/null
source "$dir/env.sh"
name="bench-$(date +%s)"
audit="$dir/logs/audit.log"
kubectl create configmap blog-context --from-file=examples/blog/context --dry-run=client -o yaml | kubectl apply -f - >/dev/null
before=$(wc -l <"$audit" 2>/dev/null || echo 0)
start=$(date +%s.%N)
# A build arg unique to this run, so every platform really builds; no rollout, so the figures are the
# build's alone and no workload moves.
sed -e "s#registry.example.com#$ARCHWAY_REGISTRY#g" -e "s/^  name: blog$/  name: $name/" -e '/^  rollout:/,$d' \
    -e "s/^  buildArgs:$/  buildArgs:\n    BENCH_RUN: \"$name\"/" examples/blog/multiarchbuild.yaml | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Ready "mab/$name" --timeout=900s >/dev/null
end=$(date +%s.%N)
rss=$(hack/lib/operator-rss.sh)
kubectl get mab "$name" -o json | python3 -c '
import json, sys
from datetime import datetime
start, end, before, audit, rss = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
status = json.load(sys.stdin)["status"]
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
print(f"apply -> Ready: {end - start:.1f} s")
for p in status["platforms"]:
    took = t(p["completedAt"]) - t(p["startedAt"]) if p.get("completedAt") and p.get("startedAt") else float("nan")
    platform, mode, node = p["platform"], p.get("mode", "?"), p.get("node", "?")
    print(f"  {platform:<14} {mode:<9} on {node:<9} build {took:.0f} s")
try:
    lines = open(audit).read().splitlines()[before:]
    requests = [json.loads(l) for l in lines if l.strip()]
    verbs = {}
    for r in requests:
        verbs[r["verb"]] = verbs.get(r["verb"], 0) + 1
    n = len(status["platforms"])
    print(f"operator API requests: {len(requests)} ({len(requests) / n:.1f} per platform build) {dict(sorted(verbs.items()))}")
except FileNotFoundError:
    print("operator API requests: n/a (no audit log)")
print(f"operator peak RSS (VmHWM): {rss}")
' "$start" "$end" "$before" "$audit" "$rss"
kubectl delete mab "$name" --wait=false >/dev/null

# The same build of linux/arm64 with the Jetson cordoned: under qemu on the emulating node.
kubectl cordon jetson-1 >/dev/null
trap 'kubectl uncordon jetson-1 >/dev/null' EXIT
start=$(date +%s.%N)
sed -e "s#registry.example.com#$ARCHWAY_REGISTRY#g" -e "s/^  name: blog$/  name: $name-emulated/" -e '/^  rollout:/,$d' \
    -e "s/^  buildArgs:$/  buildArgs:\n    BENCH_RUN: \"$name\"/" -e "/^  - linux\/\(amd64\|arm\/v7\|arm\/v6\)$/d" \
    examples/blog/multiarchbuild.yaml | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Ready "mab/$name-emulated" --timeout=900s >/dev/null
end=$(date +%s.%N)
echo "emulated (jetson-1 cordoned):"
kubectl get mab "$name-emulated" -o json | python3 -c '
import json, sys
from datetime import datetime
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
start, end = float(sys.argv[1]), float(sys.argv[2])
print(f"apply -> Ready: {end - start:.1f} s")
for p in json.load(sys.stdin)["status"]["platforms"]:
    platform, mode, node = p["platform"], p.get("mode", "?"), p.get("node", "?")
    took = t(p["completedAt"]) - t(p["startedAt"])
    print(f"  {platform:<14} {mode:<9} on {node:<9} build {took:.0f} s")
' "$start" "$end"
kubectl delete mab "$name-emulated" --wait=false >/dev/null
