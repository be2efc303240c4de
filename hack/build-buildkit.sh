#!/usr/bin/env bash
# Builds buildkitd and buildctl from the github.com/moby/buildkit Go module at one pinned version, and
# copies the module's buildctl-daemonless.sh beside them, into a cache outside the repository keyed on
# that version and on this recipe. Prints the bin directory. A warm cache returns at once; concurrent
# callers wait for one build. Debian packages no BuildKit, so the local environment builds its own.
set -euo pipefail

# Keep in step with the default --buildkit-image (src/plan/job.rs), so host and pods run one version.
BUILDKIT_VERSION=${BUILDKIT_VERSION:-v0.26.3}
# Bump when a change below alters what gets built, so caches built by the old recipe are not reused.
RECIPE=1
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
enter_cache "buildkit-$BUILDKIT_VERSION-r$RECIPE" buildkitd buildctl buildctl-daemonless.sh
echo "building BuildKit $BUILDKIT_VERSION from Go modules (first time only)" >&2

command -v go >/dev/null || { echo "go is required to build BuildKit" >&2; exit 1; }
mod="$out/src"
rm -rf "$mod" "$out/bin.tmp"; mkdir -p "$mod"
cd "$mod"

# `go install module@version` refuses a module whose go.mod has replace or exclude directives, and a
# dependency's directives are ignored anyway: this wrapper module carries buildkit's own.
json=$(go mod download -json "github.com/moby/buildkit@$BUILDKIT_VERSION")
gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$json")
srcdir=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$json")
{
  echo "module archway.dev/buildkit"
  echo
  grep -E '^go [0-9.]+$' "$gomod"
  echo
  echo "require github.com/moby/buildkit $BUILDKIT_VERSION"
  echo
  # Single-line directives and whole blocks, comments dropped.
  awk '/^(replace|exclude) \(/ {blk=1} blk {print} blk && /^\)/ {blk=0; next} !blk && /^(replace|exclude) [^(]/ {print}' "$gomod" |
    sed 's#[[:space:]]*//.*##' | grep -v '^[[:space:]]*$'
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/moby/buildkit/cmd/buildctl"
	_ "github.com/moby/buildkit/cmd/buildkitd"
)
GO
go mod tidy >&2

mkdir -p "$out/bin.tmp"
pkg=github.com/moby/buildkit
ldflags="-s -w -X $pkg/version.Version=$BUILDKIT_VERSION -X $pkg/version.Package=$pkg"
start=$(date +%s)
CGO_ENABLED=0 go build -trimpath -tags "osusergo netgo" -ldflags "$ldflags" -o "$out/bin.tmp/" \
  "$pkg/cmd/buildkitd" "$pkg/cmd/buildctl" >&2
install -m 0755 "$srcdir/examples/buildctl-daemonless/buildctl-daemonless.sh" "$out/bin.tmp/"
rm -rf "$out/bin"; mv "$out/bin.tmp" "$out/bin"
echo "BuildKit $BUILDKIT_VERSION built in $(( $(date +%s) - start ))s" >&2
echo "$out/bin"
