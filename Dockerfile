# The operator's image: one static `archway` binary on a distroless base, run as a non-root user.
#
# Built for linux/amd64, linux/arm64 and linux/arm/v7 (a cluster of Raspberry Pis alone runs it) by
# cross-compiling on the build machine's own platform, never the compiler under emulation:
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 -t REGISTRY/archway:TAG --push .
#   buildah build --platform linux/amd64,linux/arm64,linux/arm/v7 --manifest REGISTRY/archway:TAG .
# The base images are build arguments, so a mirror can stand in (`make image` uses images it makes from
# Debian packages and this machine's Rust toolchain in the local environment's registry).
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS build
ARG TARGETPLATFORM
# The Rust target, the GNU triple of its C cross compiler, and its Debian architecture.
RUN case "$TARGETPLATFORM" in \
      linux/amd64) echo "x86_64-unknown-linux-gnu x86_64-linux-gnu amd64" ;; \
      linux/arm64) echo "aarch64-unknown-linux-gnu aarch64-linux-gnu arm64" ;; \
      linux/arm/v7) echo "armv7-unknown-linux-gnueabihf arm-linux-gnueabihf armhf" ;; \
      *) echo "archway's image is built for linux/amd64, linux/arm64 and linux/arm/v7, not $TARGETPLATFORM" >&2; \
         exit 1 ;; \
    esac > /target
# For another platform than the build machine's: Debian's cross compiler and static C library (ring has
# C code, and the binary links glibc statically), and Rust's standard library for the target.
RUN set -e; set -- $(cat /target); \
    if [ "$(gcc -dumpmachine)" != "$2" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends "gcc-$(echo "$2" | tr _ -)" "libc6-dev-$3-cross"; \
      rustup target add "$1"; \
    fi
WORKDIR /src
COPY . .
# Static (crt-static): the final image has no C library. glibc 2.34 and later carries its own DNS and
# files lookups, so name resolution needs no NSS module at run time.
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    set -e; set -- $(cat /target); \
    if [ "$(gcc -dumpmachine)" != "$2" ]; then \
      export "CARGO_TARGET_$(echo "$1" | tr a-z- A-Z_)_LINKER=$2-gcc" "CC_$(echo "$1" | tr - _)=$2-gcc"; \
    fi; \
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$1" --bin archway; \
    cp "target/$1/release/archway" /archway

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="archway" \
      org.opencontainers.image.description="Builds multi-architecture container images inside Kubernetes and rolls workloads out to them" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /archway /usr/local/bin/archway
# distroless' nonroot user, by number, so runAsNonRoot can check it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/archway"]
CMD ["operator"]
