#!/usr/bin/env bash
# Installs the host programs the local environment needs (Debian, as root). Idempotent: it checks
# first and runs apt only for what is missing. Go and cargo are not installed here: it says so.
set -euo pipefail

# package -> a file it installs (checked instead of asking dpkg, so a manual install counts too)
declare -A check=(
  [buildah]=/usr/bin/buildah
  [skopeo]=/usr/bin/skopeo
  [docker-registry]=/usr/bin/docker-registry
  [qemu-user-static]=/usr/bin/qemu-aarch64-static
  [binfmt-support]=/usr/sbin/update-binfmts
  [apache2-utils]=/usr/bin/htpasswd
  [busybox-static]=/bin/busybox
  [git]=/usr/bin/git
  [util-linux]=/usr/bin/unshare
  [runc]=/usr/sbin/runc
  [mmdebstrap]=/usr/bin/mmdebstrap
)

missing=()
for pkg in "${!check[@]}"; do
  [ -e "${check[$pkg]}" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}; run this script as root (or apt-get install them)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

# A policy for buildah and skopeo when the distribution left none (tests pull and push freely).
if [ ! -e /etc/containers/policy.json ]; then
  mkdir -p /etc/containers
  echo '{"default":[{"type":"insecureAcceptAnything"}]}' > /etc/containers/policy.json
fi

fail=0
command -v go >/dev/null || { echo "Go is missing: install Go (it builds the control plane and BuildKit, hack/build-*.sh)" >&2; fail=1; }
command -v cargo >/dev/null || { echo "cargo is missing: install a Rust toolchain (rustup or the distribution's)" >&2; fail=1; }
exit $fail
