#!/usr/bin/env bash
# Makes the two base images the Dockerfiles start from, with no registry: a Debian 12
# root filesystem from debootstrap (tagged as the Dockerfiles' runtime base), and a
# Rust builder made from it plus this machine's own Rust toolchain (tagged as the
# Dockerfiles' builder). Each is skipped when its tag exists already, so this is cheap
# to run before every build. Also the way to build on an air-gapped host: see
# docs/deploy.md, "Building without a registry".
#
# Usage: tests/base-images.sh            (as root, or through sudo)
#   MIRROR=http://deb.debian.org/debian  the Debian mirror (default: the one apt uses)
#   FORCE=1                              rebuild even when the tags exist
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "base-images: $*"; }
die() { echo "base-images: $*" >&2; exit 1; }

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

# The tags come from the Dockerfiles themselves, so they cannot drift apart.
builder_tag=$(sed -n 's/^FROM \(rust:[^ ]*\) AS build$/\1/p' Dockerfile.gateway)
runtime_tag=$(sed -n 's/^FROM \(debian:[^ ]*\) AS runtime$/\1/p' Dockerfile.gateway)
[ -n "$builder_tag" ] && [ -n "$runtime_tag" ] || die "cannot read the FROM lines of Dockerfile.gateway"
for f in Dockerfile.api; do
  grep -q "^FROM $builder_tag AS build$" "$f" || die "$f does not build FROM $builder_tag"
  grep -q "^FROM $runtime_tag AS runtime$" "$f" || die "$f does not start FROM $runtime_tag"
done
rust_version=${builder_tag#rust:}
rust_version=${rust_version%%-*}

docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running, may this user use it?)"

have() { [ -z "${FORCE:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  # The mirror apt already uses for Debian (deb822 or one-line sources).
  local m
  m=$(grep -hs -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list \
        | grep -E '/debian/?( |$)' | grep -v security | head -1 \
        | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*$//')
  echo "${m:-http://deb.debian.org/debian}"
}

if have "$runtime_tag"; then
  say "$runtime_tag exists"
else
  command -v debootstrap >/dev/null 2>&1 || {
    say "installing debootstrap"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
  }
  root=$(mktemp -d /var/tmp/base-rootfs.XXXXXX)
  trap '$sudo rm -rf "$root"' EXIT
  say "debootstrap bookworm from $(mirror) (about a minute)"
  $sudo debootstrap --variant=minbase bookworm "$root" "$(mirror)" >/dev/null
  # What a slim image leaves out: package caches and indexes, documentation, locales.
  $sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
    "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/info/* "$root"/var/log/*.log
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec $sudo rm -rf {} +
  $sudo tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$runtime_tag" >/dev/null
  $sudo rm -rf "$root"
  trap - EXIT
  say "$runtime_tag imported ($(docker image inspect -f '{{.Size}}' "$runtime_tag" | numfmt --to=iec))"
fi

if have "$builder_tag"; then
  say "$builder_tag exists"
else
  # This machine's toolchain of exactly the version the Dockerfiles name.
  sysroot=$(rustc "+$rust_version" --print sysroot 2>/dev/null || true)
  [ -n "$sysroot" ] && [ -x "$sysroot/bin/rustc" ] \
    || die "Rust $rust_version is not installed here (rustup toolchain install $rust_version)"
  got=$("$sysroot/bin/rustc" -V | awk '{print $2}')
  [ "$got" = "$rust_version" ] || die "the toolchain at $sysroot is $got, not $rust_version"
  ctx=$(mktemp -d /var/tmp/builder-ctx.XXXXXX)
  trap 'rm -rf "$ctx"' EXIT
  # cargo and rustc with their libraries; no docs (800 MB), no other tools.
  mkdir -p "$ctx/rust/bin"
  cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$ctx/rust/bin/"
  cp -a "$sysroot/lib" "$ctx/rust/lib"
  # The builder trusts what this host trusts: CAs added locally (a corporate or
  # sandbox proxy that inspects TLS) let cargo and apt reach their registries from
  # inside the build as they do here. The runtime images get Debian's bundle only.
  mkdir -p "$ctx/local-ca"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/local-ca/" 2>/dev/null || true
  cat > "$ctx/Dockerfile" <<EOF
FROM $runtime_tag
COPY local-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
 && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && rustc -V && cargo -V
EOF
  say "building $builder_tag from $runtime_tag and $sysroot"
  docker build --network host -q -t "$builder_tag" "$ctx" >/dev/null
  rm -rf "$ctx"
  trap - EXIT
  say "$builder_tag built ($(docker image inspect -f '{{.Size}}' "$builder_tag" | numfmt --to=iec))"
fi
