#!/usr/bin/env bash
# The build cache (spec.cache.image) on the local environment (part of make bench): one Dockerfile whose
# RUN step computes for a while (a stand-in for installing packages) and whose last layer copies a file,
# built for linux/amd64 and linux/arm64 with each builder, with and without a cache. Each is applied and
# built (cold: the cache is new), then the copied file changes and the time until the new index is Ready
# is measured again. Prints the times and what the cache saved; asserts nothing.
# BENCH_CACHE_BUILDERS (default "buildah buildkit") picks the builders, BENCH_CACHE_WORK (default 48) the
# MiB the RUN step compresses.
set -euo pipefail
dir=${1:-.dev}
# shellcheck source=/dev/null
source "$dir/env.sh"
builders=${BENCH_CACHE_BUILDERS:-buildah buildkit}
work=${BENCH_CACHE_WORK:-48}
run="bench-cache-$(date +%s)"

# A context of this run's own (its own cache repositories, too), so nothing of an earlier run is reused.
context() {
  local name=$1 changing=$2
  kubectl create configmap "$name" --dry-run=client -o yaml \
    --from-literal=Dockerfile="FROM $ARCHWAY_REGISTRY/library/busybox:latest
RUN dd if=/dev/urandom bs=1048576 count=$work 2>/dev/null | gzip -9 | md5sum > /work.md5
COPY changing /changing
" --from-literal=changing="$changing" | kubectl apply -f - >/dev/null
}

# Seconds from now until `mab/$1` is Ready with a status.image other than `$2`.
wait_published() {
  local name=$1 previous=$2 start ready image
  start=$(date +%s.%N)
  for _ in $(seq 1 9000); do
    read -r ready image < <(kubectl get mab "$name" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.image}{"\n"}' 2>/dev/null || echo "- -")
    if [ "$ready" = True ] && [ -n "$image" ] && [ "$image" != "$previous" ]; then
      python3 -c "import time; print(f'{time.time() - $start:.1f}')"
      return
    fi
    sleep 0.2
  done
  echo "timed out waiting for mab/$name" >&2
  exit 1
}

# Builds `$1` with builder `$2` and cache `$3` (yes/no) twice; prints "first second" in seconds.
twice() {
  local name=$1 builder=$2 cached=$3 cache="" first second image
  context "$name-context" 1
  [ "$cached" = yes ] && cache="  cache: {image: $ARCHWAY_REGISTRY/bench/$name-cache}"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: archway.dev/v1alpha1
kind: MultiArchBuild
metadata: {name: $name}
spec:
  source: {configMap: {name: $name-context}}
  platforms: [linux/amd64, linux/arm64]
  builder: {kind: $builder}
  output: {image: $ARCHWAY_REGISTRY/bench/$name, pushSecret: {name: registry-credentials}}
$cache
EOF
  first=$(wait_published "$name" "")
  image=$(kubectl get mab "$name" -o jsonpath='{.status.image}')
  context "$name-context" 2
  second=$(wait_published "$name" "$image")
  echo "$first $second"
}

echo "build cache: RUN compressing ${work} MiB, then COPY of a changed file; linux/amd64 and linux/arm64 (apply -> Ready)"
printf '%-9s %-9s %12s %24s\n' builder cache "first build" "after the COPY changed"
for builder in $builders; do
  read -r cold_none again_none < <(twice "$run-$builder-none" "$builder" no)
  read -r cold_cache again_cache < <(twice "$run-$builder-cache" "$builder" yes)
  printf '%-9s %-9s %10s s %22s s\n' "$builder" none "$cold_none" "$again_none"
  printf '%-9s %-9s %10s s %22s s\n' "$builder" registry "$cold_cache" "$again_cache"
  python3 -c "none, cache = $again_none, $again_cache
print(f'$builder: the cache saved {none - cache:.1f} s of {none:.1f} s on the rebuild ({none / cache:.1f}x faster)')"
  kubectl delete mab "$run-$builder-none" "$run-$builder-cache" --wait=false >/dev/null
  kubectl delete configmap "$run-$builder-none-context" "$run-$builder-cache-context" --wait=false >/dev/null
done
