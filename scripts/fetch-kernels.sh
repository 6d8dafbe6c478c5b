#!/usr/bin/env bash
# fetch-kernels.sh downloads the Debian kernels the kernel matrix boots under
# qemu (integration/kernels_test.go, integration/nodes_test.go) and keeps
# only their vmlinuz and the modules a guest needs for 9p file sharing:
#
#   5.10  Debian 11 (bullseye)    6.1  Debian 12 (bookworm)
#   6.12  Debian 13 (trixie)
#
#   scripts/fetch-kernels.sh [NAME...]     (default: all of them)
#
# The packages come from the machine's own Debian mirror through a private apt
# configuration under the cache directory: nothing is installed, and the
# machine's apt state is not touched. Each kernel ends up in
#
#   $CKPT_TEST_CACHE_DIR/kernels/NAME/vmlinuz   (default /var/cache/ckpt-apptainer-test)
#   $CKPT_TEST_CACHE_DIR/kernels/NAME/version   the package it came from
#   $CKPT_TEST_CACHE_DIR/kernels/NAME/modules/  virtio PCI and 9p modules,
#                                               uncompressed, and "order":
#                                               their names in load order
#
# A kernel already there is kept. Any user may run it; the cache directory
# must be writable.
set -euo pipefail

CACHE_DIR=${CKPT_TEST_CACHE_DIR:-/var/cache/ckpt-apptainer-test}
KDIR=$CACHE_DIR/kernels
APT_DIR=$KDIR/apt

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'fetch-kernels: %s\n' "$*" >&2
	exit 1
}

# suite_of prints the Debian suite whose kernel is NAME.
suite_of() {
	case $1 in
	5.10) echo bullseye ;;
	6.1) echo bookworm ;;
	6.12) echo trixie ;;
	*) return 1 ;;
	esac
}

# extract_modules ROOT OUT: copies GUEST_MODULES and what they depend on
# from the unpacked package at ROOT into OUT, uncompressed (busybox's
# insmod takes plain ELF), and writes OUT/order.
extract_modules() {
	local root=$1 out=$2 mdir
	mdir=$(find "$root/lib/modules" "$root/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d -print -quit 2>/dev/null || true)
	[[ -n $mdir ]] || die "no /lib/modules in the package"
	mkdir -p "$out"
	: >"$out/order"
	local -A seen=()
	add() {
		local name=${1//-/_} file deps d
		[[ -z ${seen[$name]:-} ]] || return 0
		seen[$name]=1
		if grep -Eq "/${name}\.ko\$|/${name//_/-}\.ko\$" "$mdir/modules.builtin" 2>/dev/null; then
			return 0
		fi
		file=$(find "$mdir/kernel" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) -print -quit)
		[[ -n $file ]] || die "module $name not found in $(basename "$mdir")"
		case $file in
		*.ko.xz) xz -dc "$file" >"$out/$name.ko" ;;
		*.ko.zst) zstd -qdc "$file" >"$out/$name.ko" ;;
		*.ko) cp "$file" "$out/$name.ko" ;;
		*) die "module $file: unknown compression" ;;
		esac
		deps=$(objcopy -O binary --only-section=.modinfo "$out/$name.ko" /dev/stdout | tr '\0' '\n' |
			sed -n 's/^depends=//p')
		for d in ${deps//,/ }; do
			add "$d"
		done
		echo "$name" >>"$out/order"
	}
	local m
	for m in "${GUEST_MODULES[@]}"; do
		add "$m"
	done
	chmod -R a+rX "$out"
}

names=("$@")
((${#names[@]})) || names=(5.10 6.1 6.12)
for n in "${names[@]}"; do
	suite_of "$n" >/dev/null || die "unknown kernel $n (known: 5.10 6.1 6.12)"
done

# GUEST_MODULES are what a guest loads to mount a host directory over
# virtio 9p; their dependencies come along. Built-in ones are skipped.
GUEST_MODULES=(virtio_pci 9pnet_virtio 9p)

todo=()
for n in "${names[@]}"; do
	if [[ -s $KDIR/$n/vmlinuz && -f $KDIR/$n/modules/order ]]; then
		say "kernel $n: $(cat "$KDIR/$n/version" 2>/dev/null) (cached)"
	else
		todo+=("$n")
	fi
done
((${#todo[@]})) || exit 0

for c in apt-get apt-cache dpkg-deb objcopy xz; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found"
done
# shellcheck source=lib/debian-archive.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/debian-archive.sh"
entry=$(archive_entry) || die "no Debian archive entry found in /etc/apt/sources.list{,.d}"
read -r MIRROR _ KEYRING <<<"$entry"

mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/preferences.d" "$APT_DIR/state/lists/partial" \
	"$APT_DIR/cache/archives/partial"
: >"$APT_DIR/status"
suites=()
for n in "${todo[@]}"; do
	suites+=("$(suite_of "$n")")
done
{
	echo "Types: deb"
	echo "URIs: $MIRROR"
	echo "Suites: ${suites[*]}"
	echo "Components: main"
	if [[ $KEYRING != - ]]; then
		echo "Signed-By: $KEYRING"
	fi
} >"$APT_DIR/sources.list.d/kernels.sources"

APT_OPTS=(-q -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
	-o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$APT_DIR/preferences.d"
	-o "Dir::State=$APT_DIR/state" -o "Dir::State::status=$APT_DIR/status"
	-o "Dir::Cache=$APT_DIR/cache" -o "APT::Architecture=amd64" -o "APT::Sandbox::User=$(id -un)"
	-o "Debug::NoLocking=1")

say "apt-get update (private configuration: ${suites[*]})"
ok=0
for i in 1 2 3; do
	if apt-get "${APT_OPTS[@]}" update >"$APT_DIR/update.log" 2>&1; then
		ok=1
		break
	fi
	sleep 10
done
((ok)) || {
	tail -n 20 "$APT_DIR/update.log" >&2
	die "apt-get update failed"
}

for n in "${todo[@]}"; do
	suite=$(suite_of "$n")
	# linux-image-amd64 is the metapackage; it depends on the versioned image.
	pkg=$(apt-cache "${APT_OPTS[@]}" show "linux-image-amd64/$suite" 2>/dev/null |
		awk -F': ' '/^Depends:/ { split($2, d, /[ ,]/); print d[1]; exit }')
	[[ $pkg == linux-image-* ]] || die "no linux-image-amd64 in $suite"
	say "kernel $n: downloading $pkg from $suite"
	work=$(mktemp -d "$KDIR/.fetch.XXXXXX")
	(cd "$work" && apt-get "${APT_OPTS[@]}" download "$pkg/$suite" >download.log 2>&1) || {
		tail -n 20 "$work/download.log" >&2
		rm -rf "$work"
		die "download of $pkg failed"
	}
	dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
	vmlinuz=$(find "$work/root/boot" -name 'vmlinuz-*' | head -n 1)
	[[ -n $vmlinuz ]] || die "$pkg has no /boot/vmlinuz-*"
	rm -rf "$KDIR/$n"
	mkdir -p "$KDIR/$n"
	extract_modules "$work/root" "$KDIR/$n/modules.tmp"
	mv "$KDIR/$n/modules.tmp" "$KDIR/$n/modules"
	cp "$vmlinuz" "$KDIR/$n/vmlinuz.tmp"
	echo "$pkg $(basename "$vmlinuz" | sed 's/^vmlinuz-//')" >"$KDIR/$n/version"
	mv "$KDIR/$n/vmlinuz.tmp" "$KDIR/$n/vmlinuz"
	chmod 0644 "$KDIR/$n/vmlinuz" "$KDIR/$n/version"
	rm -rf "$work"
	say "kernel $n: $KDIR/$n/vmlinuz ($(du -h "$KDIR/$n/vmlinuz" | cut -f1))"
done
