#!/usr/bin/env bash
# Builds the operator's image from the top-level Dockerfile with buildah for linux/amd64 and pushes it to
# the local environment's registry as archway/archway:dev; prints its reference. Docker Hub and gcr.io are
# out of reach here, so the Dockerfile's two base images are made first (once; kept in the registry):
#   archway-build/rust:<rustc version>  Debian bookworm (gcc, libc6-dev) from Debian's packages, with this
#                                       machine's Rust toolchain and trust store, standing in for
#                                       docker.io/library/rust
#   archway-build/static:bookworm       CA roots and a nonroot user (65532) from the same Debian root,
#                                       standing in for gcr.io/distroless/static
# linux/arm64 and linux/arm/v7 need Rust's standard library for those targets (rustup target add), which
# this machine cannot download; README.md has the command that builds all three elsewhere.
set -euo pipefail
dir=${1:-.dev}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The environment's registry: from DIR/env.sh, unless the caller (a test) set it already.
if [ -z "${ARCHWAY_REGISTRY:-}" ]; then
  # shellcheck source=/dev/null
  source "$dir/env.sh"
fi
registry=$ARCHWAY_REGISTRY
tls=(--authfile "$REGISTRY_AUTH_FILE" --cert-dir "$ARCHWAY_REGISTRY_CERT_DIR")
exists() { skopeo inspect --raw --authfile "$REGISTRY_AUTH_FILE" --cert-dir "$ARCHWAY_REGISTRY_CERT_DIR" "docker://$1" >/dev/null 2>&1; }

# Bump when a change below alters the base images, so the ones made by the old recipe are not reused.
RECIPE=2
sysroot=$(rustc --print sysroot)
rust_version=$(rustc --version | awk '{print $2}')
rust_image="$registry/archway-build/rust:$rust_version-r$RECIPE"
runtime_image="$registry/archway-build/static:bookworm"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

debian_root() {
  [ -f "$work/debian.tar" ] && return
  echo "making a Debian bookworm root with gcc and libc6-dev from Debian's packages ..." >&2
  mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,ca-certificates bookworm "$work/debian.tar" >&2
}

if ! exists "$rust_image"; then
  debian_root
  echo "adding the Rust $rust_version toolchain of this machine (cargo, rustc, the host's std) ..." >&2
  mkdir -p "$work/rust/usr/local/rust" "$work/rust/usr/local/bin" "$work/rust/usr/local/cargo"
  cp -a "$sysroot/bin" "$work/rust/usr/local/rust/"
  # The libraries without rust-src and the docs: what compiling for the host needs.
  (cd "$sysroot" && tar -cf - --exclude=lib/rustlib/src lib) | tar -C "$work/rust/usr/local/rust" -xf -
  for tool in cargo rustc rustdoc; do ln -s "../rust/bin/$tool" "$work/rust/usr/local/bin/$tool"; done
  # This machine's trust store, so cargo in the build reaches crates.io the way it does here (a proxy
  # with a CA of its own, say), as the public rust image would on an open network.
  mkdir -p "$work/rust/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$work/rust/etc/ssl/certs/"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$work/debian.tar" / >/dev/null
  buildah add --quiet "$ctr" "$work/rust" / >/dev/null
  buildah config --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env CARGO_HOME=/usr/local/cargo --os linux --arch amd64 "$ctr"
  buildah commit --quiet --rm "$ctr" "$rust_image" >/dev/null
  buildah push --quiet "${tls[@]}" "$rust_image" "docker://$rust_image"
fi

if ! exists "$runtime_image"; then
  debian_root
  echo "making the runtime base: CA roots and the nonroot user ..." >&2
  rt="$work/runtime"
  mkdir -p "$rt/etc/ssl/certs" "$rt/tmp" "$rt/home/nonroot"
  chmod 1777 "$rt/tmp"
  chown 65532:65532 "$rt/home/nonroot"
  tar -C "$rt" -xf "$work/debian.tar" ./etc/ssl/certs/ca-certificates.crt
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    > "$rt/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$rt/etc/group"
  printf 'hosts: files dns\n' > "$rt/etc/nsswitch.conf"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$rt" / >/dev/null
  buildah config --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --user 65532:65532 \
    --os linux --arch amd64 "$ctr"
  buildah commit --quiet --rm "$ctr" "$runtime_image" >/dev/null
  buildah push --quiet "${tls[@]}" "$runtime_image" "docker://$runtime_image"
fi

image="$registry/archway/archway:dev"
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
echo "building $image for linux/amd64 (a release build: several minutes the first time) ..." >&2
buildah build --quiet --platform linux/amd64 --cert-dir "$ARCHWAY_REGISTRY_CERT_DIR" --authfile "$REGISTRY_AUTH_FILE" \
  --build-arg "RUST_IMAGE=$rust_image" --build-arg "RUNTIME_IMAGE=$runtime_image" \
  --build-arg "REVISION=$revision" --layers=false -t "$image" -f "$root/Dockerfile" "$root" >&2
buildah push --quiet "${tls[@]}" "$image" "docker://$image"
echo "$image"
