#!/usr/bin/env bash
# Builds helm from the helm.sh/helm/v4 Go module at one pinned version, and gitops-check (the program in
# testenv/gitops-check/main.go, on the real kstatus, gopher-lua and gopher-json libraries: see its header),
# into a cache outside the repository keyed on the helm version, this recipe and a hash of main.go. Prints
# the bin directory. A warm cache returns at once; concurrent callers wait for one build.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v4.3.2}
# Bump when a change below alters what gets built, so caches built by the old recipe are not reused.
RECIPE=1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
check_src="$root/testenv/gitops-check/main.go"
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
enter_cache "gitops-tools-$HELM_VERSION-r$RECIPE-$(sha256sum "$check_src" | cut -c1-12)" helm gitops-check
echo "building helm $HELM_VERSION and gitops-check from Go modules (first time only; about 8 min on 2 cores)" >&2

# gitops-check's libraries: kstatus as Flux and kpt use it; gopher-lua and its JSON encoder at the
# versions Argo CD's go.mod pins (the Lua VM of its resource health checks).
CLI_UTILS_VERSION=v0.37.2
GOPHER_LUA_VERSION=v1.1.2
GOPHER_JSON_VERSION=v0.0.0-20190114024228-97fed8db8427

command -v go >/dev/null || { echo "go is required to build helm and gitops-check" >&2; exit 1; }
mod="$out/src"
rm -rf "$mod" "$out/bin.tmp"; mkdir -p "$mod/helm" "$mod/gitops-check"

# Two wrapper modules, so helm is built against exactly its own go.mod and gitops-check's pins (whose
# Kubernetes libraries are older) cannot move any of helm's dependencies.
# `go install module@version` refuses a module whose go.mod has replace or exclude directives, and a
# dependency's directives are ignored anyway: the helm wrapper carries helm's own.
cd "$mod/helm"
gomod=$(go mod download -json "helm.sh/helm/v4@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
  echo "module archway.dev/helm"
  echo
  grep -E '^go [0-9.]+$' "$gomod"
  echo
  echo "require helm.sh/helm/v4 $HELM_VERSION"
  echo
  # Single-line directives and whole blocks, comments dropped.
  awk '/^(replace|exclude) \(/ {blk=1} blk {print} blk && /^\)/ {blk=0; next} !blk && /^(replace|exclude) [^(]/ {print}' "$gomod" |
    sed -e 's#[[:space:]]*//.*##' -e '/^[[:space:]]*$/d'
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v4/cmd/helm"
GO
go mod tidy >&2

cd "$mod/gitops-check"
cp "$check_src" main.go
go mod init archway.dev/gitops-check >&2
go get "sigs.k8s.io/cli-utils@$CLI_UTILS_VERSION" "github.com/yuin/gopher-lua@$GOPHER_LUA_VERSION" \
  "layeh.com/gopher-json@$GOPHER_JSON_VERSION" >&2
go mod tidy >&2

mkdir -p "$out/bin.tmp"
# The version flags of helm's Makefile for a build of a release tag (no "unreleased" metadata). The
# module zip carries no git commit, so gitCommit stays empty.
ver=helm.sh/helm/v4/internal/version
ldflags="-s -w -X $ver.version=$HELM_VERSION -X $ver.metadata= -X $ver.gitTreeState=clean"
start=$(date +%s)
(cd "$mod/helm" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/bin.tmp/" helm.sh/helm/v4/cmd/helm) >&2
(cd "$mod/gitops-check" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/bin.tmp/gitops-check" .) >&2
rm -rf "${out:?}/bin"; mv "$out/bin.tmp" "$out/bin"
echo "helm $HELM_VERSION and gitops-check built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
