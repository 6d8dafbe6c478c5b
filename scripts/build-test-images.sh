#!/usr/bin/env bash
# build-test-images.sh builds the container images the integration tests need
# beyond the busybox one they make themselves: a minimal Debian root file
# system with python3, packed as a SIF. Run it as root; it is idempotent and
# cached, so a second run returns at once.
#
# Only the machine's apt mirror is reachable, so the root file system is made
# with debootstrap from the machine's own Debian archive entry (mirror, suite
# and keyring read from /etc/apt/sources.list{,.d}, never written here), and
# `apptainer build` packs it without any registry.
#
#   $CKPT_TEST_IMAGE_DIR/python3.sif   (default /var/lib/ckpt-apptainer-test),
#                                      world-readable, what the tests use
#   $CKPT_TEST_CACHE_DIR/python3-SUITE (default /var/cache/ckpt-apptainer-test),
#                                      the debootstrapped root file system
#
# The SIF is rebuilt when the recipe below changes (a stamp file beside it
# records it) or with --force.
set -euo pipefail

IMAGE_DIR=${CKPT_TEST_IMAGE_DIR:-/var/lib/ckpt-apptainer-test}
CACHE_DIR=${CKPT_TEST_CACHE_DIR:-/var/cache/ckpt-apptainer-test}
PYTHON_SIF=$IMAGE_DIR/python3.sif
# Bump when the image contents change, so cached images are rebuilt.
RECIPE_VERSION=1
PY_PACKAGES=python3-minimal

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'build-test-images: %s\n' "$*" >&2
	exit 1
}

FORCE=0
case ${1:-} in
--force) FORCE=1 ;;
"") ;;
*) die "usage: $0 [--force]" ;;
esac

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap needs it)"
for c in apptainer debootstrap flock; do
	command -v "$c" >/dev/null 2>&1 || [[ -x /usr/sbin/$c ]] ||
		die "$c not found: run scripts/install-deps.sh"
done
export PATH=$PATH:/usr/sbin:/sbin

# shellcheck source=lib/debian-archive.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/debian-archive.sh"

entry=$(archive_entry) || die "no Debian archive entry found in /etc/apt/sources.list{,.d}"
read -r MIRROR SUITE KEYRING <<<"$entry"
[[ $KEYRING != - && -f $KEYRING ]] || KEYRING=""

# The stamp names everything the image is made from; a different stamp
# means the cached image is stale.
STAMP="recipe=$RECIPE_VERSION suite=$SUITE mirror=$MIRROR packages=$PY_PACKAGES"
ROOTFS=$CACHE_DIR/python3-$SUITE

mkdir -p "$IMAGE_DIR" "$CACHE_DIR"
chmod 0755 "$IMAGE_DIR"
# Setup and a developer may run this at the same time: one builds, the other
# waits and then finds the image ready.
exec 9>"$CACHE_DIR/.lock"
flock -w 1800 9 || die "another build holds $CACHE_DIR/.lock"

if ((FORCE == 0)) && [[ -f $PYTHON_SIF && $(cat "$PYTHON_SIF.stamp" 2>/dev/null) == "$STAMP" ]]; then
	say "$PYTHON_SIF is up to date ($(du -h "$PYTHON_SIF" | cut -f1))"
	exit 0
fi

start=$(date +%s)
if ((FORCE == 0)) && [[ -f $ROOTFS/.ckpt-complete && $(cat "$ROOTFS/.ckpt-complete") == "$STAMP" ]]; then
	say "root file system cached in $ROOTFS"
else
	say "debootstrap $SUITE from $MIRROR into $ROOTFS (minbase + $PY_PACKAGES)"
	rm -rf "$ROOTFS" "$ROOTFS.tmp"
	args=(--variant=minbase --include="$PY_PACKAGES")
	[[ -z $KEYRING ]] || args+=(--keyring="$KEYRING")
	log=$CACHE_DIR/debootstrap.log
	if ! debootstrap "${args[@]}" "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "debootstrap failed (full log: $log)"
	fi
	# Nothing the tests use, and most of the image otherwise.
	rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/* \
		"$ROOTFS.tmp"/usr/share/doc "$ROOTFS.tmp"/usr/share/man "$ROOTFS.tmp"/usr/share/locale \
		"$ROOTFS.tmp"/usr/share/info
	chroot "$ROOTFS.tmp" /usr/bin/python3 -c 'import os, sys, time' ||
		die "python3 does not run in the new root file system"
	echo "ckpt-apptainer test image: Debian $SUITE with $PY_PACKAGES" >"$ROOTFS.tmp/etc/ckpt-marker"
	printf '%s\n' "$STAMP" >"$ROOTFS.tmp/.ckpt-complete"
	mv "$ROOTFS.tmp" "$ROOTFS"
fi

say "apptainer build $PYTHON_SIF"
tmp=$PYTHON_SIF.tmp.$$
trap 'rm -f "$tmp"' EXIT
if ! out=$(apptainer build --force "$tmp" "$ROOTFS" 2>&1); then
	printf '%s\n' "$out" | tail -n 30 >&2
	die "apptainer build failed"
fi
chmod 0644 "$tmp"
mv "$tmp" "$PYTHON_SIF"
trap - EXIT
printf '%s\n' "$STAMP" >"$PYTHON_SIF.stamp"
chmod 0644 "$PYTHON_SIF.stamp"
say "built $PYTHON_SIF: $(du -h "$PYTHON_SIF" | cut -f1) in $(($(date +%s) - start)) s"
