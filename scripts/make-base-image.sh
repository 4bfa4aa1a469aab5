#!/usr/bin/env bash
# Make the base image debian:bookworm-slim (docker.io/library/debian:bookworm-slim) in the local
# container storage (buildah's and podman's) when it is not there yet, the way Debian's official
# image is made: debootstrap --variant=minbase, apt's sources for bookworm, -updates and
# -security, and the "slim" dpkg filters (no docs, man pages or locales). For machines that reach
# Debian's mirror but no image registry. Idempotent: with the image present it only says so.
#   scripts/make-base-image.sh            # MIRROR=http://... to choose the Debian mirror
# Needs buildah and debootstrap (scripts/system-packages.sh installs them) and root (or sudo).
set -euo pipefail

IMAGE=docker.io/library/debian:bookworm-slim
SUITE=bookworm

if buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE: present ($(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" | cut -c1-12)), nothing to do"
    exit 0
fi
for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (bash scripts/system-packages.sh)" >&2; exit 2; }
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# the mirror apt uses here (deb822 .sources or one-line sources.list), else Debian's CDN
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(grep -hosE '(URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -oE 'https?://[^[:space:]]+' | head -n1 || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
MIRROR=${MIRROR%/}
SECURITY=${SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}

root=$(mktemp -d /tmp/bookworm-slim.XXXXXX)
container=""
cleanup() {
    [ -z "$container" ] || buildah rm "$container" >/dev/null 2>&1 || true
    $sudo rm -rf "$root" "$root.tar" "$root.log"
}
trap cleanup EXIT

started=$SECONDS
echo "base image $IMAGE: absent; debootstrap --variant=minbase $SUITE from $MIRROR"
$sudo debootstrap --variant=minbase --arch="$(dpkg --print-architecture)" "$SUITE" "$root" "$MIRROR" \
    >"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; exit 1; }
rm -f "$root.log"

# what the official slim image adds: apt's sources, no docs or locales, clean apt caches
$sudo tee "$root/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
$sudo tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' | $sudo tee "$root/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
echo 'Apt::AutoRemove::SuggestsImportant "false";' | $sudo tee "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" >/dev/null
$sudo rm -f "$root/etc/apt/sources.list"
$sudo tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
$sudo find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
$sudo find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
$sudo rm -rf "$root"/usr/share/{man,info,groff,lintian,linda}/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
    "$root"/etc/resolv.conf "$root"/etc/hostname
$sudo find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +

container=$(buildah from scratch)
$sudo tar -C "$root" --numeric-owner -cf "$root.tar" .
buildah add "$container" "$root.tar" / >/dev/null  # a local tar is unpacked
buildah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --os linux --arch "$(dpkg --print-architecture)" "$container"
buildah commit --quiet --rm "$container" "$IMAGE" >/dev/null
container=""
echo "base image $IMAGE: made in $((SECONDS - started)) s ($(buildah images --format '{{.Size}}' "$IMAGE"))"
