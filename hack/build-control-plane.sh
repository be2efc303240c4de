#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from their Go modules
# at one pinned Kubernetes version, into a cache outside the repository keyed on that version and on this
# recipe. Prints the bin directory. A warm cache returns at once; concurrent callers wait for one build.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
# Bump when a change below alters what gets built, so caches built by the old recipe are not reused.
RECIPE=1
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
enter_cache "k8s-$K8S_VERSION-r$RECIPE" etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
echo "building the Kubernetes $K8S_VERSION control plane from Go modules (first time only; 15-35 min on 2 cores)" >&2

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
mod="$out/src"
rm -rf "$mod" "$out/bin.tmp"; mkdir -p "$mod/etcd"
cd "$mod"

# k8s.io/kubernetes requires its staging modules at v0.0.0; Go ignores a dependency's replace lines,
# so this module needs its own: every k8s.io/X v0.0.0 maps to k8s.io/X v0.<minor>.<patch>.
staging_version="v0${K8S_VERSION#v1}"
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
  echo "module archway.dev/controlplane"
  echo
  grep -E '^go [0-9.]+$' "$gomod"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  grep -E '^\s*k8s\.io/[a-z0-9.-]+ v0\.0\.0(\s|$)' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} > go.mod

# etcd at the version the apiserver was released with (it is an indirect dependency of the module).
cat > etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
etcd_version=$(grep -E '^\s*go.etcd.io/etcd/server/v3 ' "$gomod" | awk '{print $2}')
go get "go.etcd.io/etcd/server/v3@$etcd_version" >&2
go mod tidy >&2

mkdir -p "$out/bin.tmp"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
start=$(date +%s)
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/bin.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./etcd >&2
rm -rf "$out/bin"; mv "$out/bin.tmp" "$out/bin"
echo "control plane $K8S_VERSION built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
