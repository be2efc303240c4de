#!/usr/bin/env bash
# The operator's cost when nothing happens (part of make bench): N MultiArchBuilds that wait (linux/riscv64,
# placement native, no such node), then the API requests the operator makes while the cluster is idle (the
# hostlet's node heartbeats only) and while one node's labels change. Counted in the apiserver's audit log,
# which records the operator's ServiceAccount only. Prints figures; asserts nothing.
set -euo pipefail
dir=${1:-.dev}
n=${BENCH_IDLE_BUILDS:-300}
idle=${BENCH_IDLE_SECONDS:-30}
# shellcheck source=/dev/null
source "$dir/env.sh"
audit="$dir/logs/audit.log"
run="idle-$(date +%s)"
# Requests since line $1 of the audit log, leader-election Lease renewals apart (they do not grow with
# builds): "N (and M on the Lease)".
requests_since() {
  tail -n +"$(($1 + 1))" "$audit" | python3 -c '
import json, sys
rs = [json.loads(l) for l in sys.stdin if l.strip()]
lease = sum(1 for r in rs if r.get("objectRef", {}).get("resource") == "leases")
print(f"{len(rs) - lease} (and {lease} on the leader Lease)")'
}

kubectl create configmap blog-context --from-file=examples/blog/context --dry-run=client -o yaml | kubectl apply -f - >/dev/null
before=$(wc -l <"$audit")
for i in $(seq 1 "$n"); do
  cat <<YAML
---
apiVersion: archway.dev/v1alpha1
kind: MultiArchBuild
metadata: {name: $run-$i, labels: {archway.dev/bench: $run}}
spec:
  source: {configMap: {name: blog-context}}
  platforms: [linux/riscv64]
  placement: native
  output: {image: $ARCHWAY_REGISTRY/bench/idle, pushSecret: {name: registry-credentials}}
YAML
done | kubectl apply -f - >/dev/null
# Every build has said that it waits.
until [ "$(kubectl get mab -l "archway.dev/bench=$run" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Building)" -ge "$n" ]; do
  sleep 1
done
sleep 5
echo "$n waiting builds applied: $(requests_since "$before") operator API requests"

before=$(wc -l <"$audit")
sleep "$idle"
echo "idle for ${idle} s: $(requests_since "$before") requests"

before=$(wc -l <"$audit")
for i in 1 2 3 4 5; do kubectl label node x86-1 "archway.dev/bench-poke=$i" --overwrite >/dev/null; sleep 1; done
sleep 10
echo "5 label changes on one node: $(requests_since "$before") requests"
kubectl label node x86-1 archway.dev/bench-poke- >/dev/null
echo "operator peak RSS (VmHWM): $(hack/lib/operator-rss.sh)"
kubectl delete mab -l "archway.dev/bench=$run" --wait=false >/dev/null
