#!/usr/bin/env bash
# Builds the registry of github.com/distribution/distribution/v3 (what the `registry:3` image runs) at
# one pinned version into a cache outside the repository keyed on that version and on this recipe.
# Prints the bin directory; a warm cache returns at once. The local environment's main registry is
# Debian's distribution 2.8; this one is the second, plain-HTTP registry, so that both generations are
# tested (v3 deletes tags, v2 cannot).
set -euo pipefail

REGISTRY_VERSION=${REGISTRY_VERSION:-v3.1.2}
# Bump when a change below alters what gets built, so caches built by the old recipe are not reused.
RECIPE=1
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
enter_cache "registry-$REGISTRY_VERSION-r$RECIPE" registry
echo "building distribution $REGISTRY_VERSION from Go modules (first time only)" >&2

command -v go >/dev/null || { echo "go is required to build the registry" >&2; exit 1; }
rm -rf "$out/bin.tmp"; mkdir -p "$out/bin.tmp"
start=$(date +%s)
CGO_ENABLED=0 GOBIN="$out/bin.tmp" go install -trimpath \
  "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION" >&2
rm -rf "$out/bin"; mv "$out/bin.tmp" "$out/bin"
echo "distribution $REGISTRY_VERSION built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
