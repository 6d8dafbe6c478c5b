#!/usr/bin/env bash
# install-deps.sh installs everything the build, the tests, the demo and the
# benchmarks need on a Debian 12 machine. Run it as root. It is idempotent and
# returns quickly when everything is already there.
#
# Apptainer, squashfuse, fuse-overlayfs and CRIU 4.x are not in Debian 12, so the
# script adds Debian's unstable suite (derived from the machine's own Debian
# source entry, so the mirror and keyring are whatever the machine already
# trusts), pins it low so nothing is upgraded implicitly, and installs only those
# packages from it. That pulls in a newer glibc; this is expected.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Packages from the machine's own suites.
# slurmctld, slurmd, slurm-client and munge are for the single-node Slurm
# cluster the tests start (scripts/setup-slurm.sh).
# qemu-system-x86 boots other kernels for the kernel matrix and the two
# nodes (integration/kernels_test.go, nodes_test.go); binutils and xz-utils
# take the 9p modules out of their kernel packages (fetch-kernels.sh).
# man-db and environment-modules read the installed man page and modulefile
# (integration/install_test.go). Open MPI (run through mpi4py) and MPICH (with
# its compiler) are the MPI jobs of integration/mpi_test.go; they come from
# the machine's own suite, before unstable is added, and without Open MPI's
# development package, whose libnl and libssl pins clash with what unstable
# brings. passt (pasta) and slirp4netns are the user-mode network stacks of
# --net private (integration/network_test.go).
BASE_PKGS=(build-essential gcc make busybox-static python3 debootstrap util-linux
	procps psmisc uidmap fuse3 time ca-certificates git
	slurmctld slurmd slurm-client munge qemu-system-x86 binutils xz-utils
	man-db environment-modules
	openmpi-bin python3-mpi4py mpich libmpich-dev
	passt slirp4netns)
# Packages only unstable (or testing) carries in the needed versions.
NEW_PKGS=(apptainer squashfuse fuse-overlayfs criu)

SOURCES_FILE=/etc/apt/sources.list.d/ckpt-apptainer-unstable.sources
PIN_FILE=/etc/apt/preferences.d/ckpt-apptainer-unstable

export DEBIAN_FRONTEND=noninteractive
# Others may run apt at the same moment: wait for the dpkg lock instead of failing.
APT_OPTS=(-q -y -o DPkg::Lock::Timeout=900 -o Dpkg::Use-Pty=0
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'install-deps: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs system packages)"

# pkg_installed reports whether the dpkg package $1 is fully installed.
pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

# missing_pkgs prints the packages among its arguments that are not installed.
missing_pkgs() {
	local p
	for p in "$@"; do
		pkg_installed "$p" || printf '%s\n' "$p"
	done
}

# apt_retry runs apt-get with retries: the dpkg lock timeout covers dpkg, but
# `apt-get update` can still fail on a busy lists lock or a flaky mirror.
apt_retry() {
	local i log
	log=$(mktemp /tmp/ckpt-apt.XXXXXX)
	for i in 1 2 3 4 5; do
		if apt-get "${APT_OPTS[@]}" "$@" >"$log" 2>&1; then
			rm -f "$log"
			return 0
		fi
		say "apt-get $* failed (attempt $i), retrying in 15 s; last lines:"
		tail -n 5 "$log" | sed 's/^/    /'
		sleep 15
	done
	tail -n 30 "$log" >&2
	rm -f "$log"
	die "apt-get $* failed"
}

# debian_entry prints "URIS<TAB>SIGNED_BY" for the machine's main Debian archive
# entry (not -security, -updates or -backports only), from deb822 files first,
# then from one-line sources.list files.
debian_entry() {
	local f out
	out=$(for f in /etc/apt/sources.list.d/*.sources; do
		# Skip the file this script writes; it is derived from the entry we look for.
		[[ -f $f && $f != "$SOURCES_FILE" ]] || continue
		awk '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris ~ /debian/ && uris !~ /security/ &&
					suites !~ /security/ && suites != "" && !found) {
					printf "%s\t%s\n", uris, signed
					found = 1
				}
				types = uris = suites = signed = enabled = ""; field = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]/ {
				# Continuation line (an inline key block in Signed-By).
				if (field == "signed-by") signed = signed "\n" $0
				next
			}
			{
				key = tolower(substr($0, 1, index($0, ":") - 1))
				val = substr($0, index($0, ":") + 1)
				sub(/^[ \t]+/, "", val); sub(/[ \t]+$/, "", val)
				field = key
				if (key == "types") types = val
				else if (key == "uris") uris = val
				else if (key == "suites") suites = val
				else if (key == "signed-by") signed = val
				else if (key == "enabled") enabled = tolower(val)
			}
			END { flush() }
		' "$f"
	done)
	if [[ -z $out ]]; then
		out=$(for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[[ -f $f ]] || continue
			awk '
				$1 != "deb" { next }
				{
					opts = ""; i = 2
					if ($2 ~ /^\[/) {
						while (i <= NF) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break }; i++ }
					}
					uri = $i; suite = $(i + 1)
					if (uri !~ /debian/ || uri ~ /security/ || suite ~ /security/) next
					signed = ""
					if (match(opts, /signed-by=[^] ]+/)) signed = substr(opts, RSTART + 10, RLENGTH - 10)
					printf "%s\t%s\n", uri, signed
					exit
				}
			' "$f"
		done)
	fi
	[[ -n $out ]] || return 1
	# First entry only; a Signed-By key block spans lines but has no tab.
	awk 'NR > 1 && /\t/ { exit } { print }' <<<"$out"
}

# add_suite writes a deb822 source for suite $1 from the machine's Debian entry.
add_suite() {
	local suite=$1 entry uris signed
	entry=$(debian_entry) || die "no Debian archive entry found in /etc/apt/sources.list{,.d}"
	uris=${entry%%$'\t'*}
	signed=${entry#*$'\t'}
	{
		echo "# Added by ckpt-apptainer scripts/install-deps.sh for apptainer and criu."
		echo "Types: deb"
		echo "URIs: $uris"
		echo "Suites: $suite"
		echo "Components: main"
		if [[ -n $signed ]]; then
			printf 'Signed-By: %s\n' "$signed"
		fi
	} >"$SOURCES_FILE.tmp"
	mv "$SOURCES_FILE.tmp" "$SOURCES_FILE"
	say "wrote $SOURCES_FILE (suite $suite, from the machine's Debian entry)"
}

write_pin() {
	cat >"$PIN_FILE.tmp" <<-'EOF'
		# Added by ckpt-apptainer scripts/install-deps.sh: take packages from these
		# suites only when asked for with -t, never as an implicit upgrade.
		Package: *
		Pin: release a=unstable
		Pin-Priority: 100

		Package: *
		Pin: release a=testing
		Pin-Priority: 100
	EOF
	mv "$PIN_FILE.tmp" "$PIN_FILE"
	say "wrote $PIN_FILE (unstable/testing pinned at priority 100)"
}

# candidate prints the version apt would install for $1 from suite $2.
candidate() {
	apt-cache policy "$1" 2>/dev/null | awk -v s="$2" '
		/^ (\*\*\*|   ) [^ ]/ { ver = ($1 == "***") ? $2 : $1; next }
		$0 ~ " " s "/" { if (ver != "" && !seen) { print ver; seen = 1 } }
	'
}

install_system_packages() {
	local missing_base missing_new
	mapfile -t missing_base < <(missing_pkgs "${BASE_PKGS[@]}")
	mapfile -t missing_new < <(missing_pkgs "${NEW_PKGS[@]}")
	local need_go=0
	command -v go >/dev/null 2>&1 || [[ -x /usr/local/go/bin/go ]] || need_go=1
	if ((${#missing_base[@]} == 0 && ${#missing_new[@]} == 0 && need_go == 0)); then
		say "system packages already installed"
		return 0
	fi

	say "apt-get update"
	apt_retry update
	if ((${#missing_base[@]})); then
		say "installing ${missing_base[*]}"
		apt_retry install --no-install-recommends "${missing_base[@]}"
	fi

	write_pin
	add_suite unstable
	say "apt-get update (with unstable)"
	apt_retry update

	# criu sometimes leaves unstable for a while; take it from testing then.
	local from_unstable=() from_testing=() p
	for p in "${missing_new[@]}"; do
		if [[ -n $(candidate "$p" unstable) ]]; then
			from_unstable+=("$p")
		else
			from_testing+=("$p")
		fi
	done
	if ((need_go)); then
		# Any Go >= 1.21 fetches the toolchain go.mod asks for (GOTOOLCHAIN=auto).
		from_unstable+=(golang-go)
	fi
	if ((${#from_testing[@]})); then
		say "${from_testing[*]} not in unstable; adding testing"
		local entry
		entry=$(cat "$SOURCES_FILE")
		printf '%s\n' "${entry/Suites: unstable/Suites: unstable testing}" >"$SOURCES_FILE"
		apt_retry update
	fi
	if ((${#from_unstable[@]})); then
		say "installing from unstable: ${from_unstable[*]}"
		apt_retry install --no-install-recommends -t unstable "${from_unstable[@]}"
	fi
	if ((${#from_testing[@]})); then
		say "installing from testing: ${from_testing[*]}"
		apt_retry install --no-install-recommends -t testing "${from_testing[@]}"
	fi
}

check_tools() {
	local c
	for c in gcc make busybox python3 unshare newuidmap fusermount3 apptainer criu \
		squashfuse squashfuse_ll fuse-overlayfs qemu-system-x86_64 \
		mpirun.openmpi mpiexec.mpich mpicc.mpich pasta slirp4netns; do
		command -v "$c" >/dev/null 2>&1 || die "$c not found after install"
	done
	[[ -x /usr/bin/time ]] || die "/usr/bin/time not found after install"
	[[ -x /usr/sbin/debootstrap ]] || die "debootstrap not found after install"
	busybox --help 2>&1 | sed -n '1s/^/    /p'
	apptainer --version | sed 's/^/    /'
	local criu_v
	criu_v=$(criu --version | awk '/Version:/ {print $2}')
	echo "    criu $criu_v"
	[[ ${criu_v%%.*} -ge 4 ]] || die "criu $criu_v is older than 4.x"
	# squashfuse --help exits non-zero even when it works; look at what it prints.
	local out
	out=$(squashfuse --help 2>&1 || true)
	grep -q '^squashfuse [0-9]' <<<"$out" || die "squashfuse does not run: $out"
	echo "    $(head -n 1 <<<"$out")"
	out=$(fuse-overlayfs --version 2>&1 || true)
	grep -q 'fuse-overlayfs: version' <<<"$out" || die "fuse-overlayfs does not run: $out"
	echo "    $(grep 'fuse-overlayfs: version' <<<"$out")"
}

install_go_tools() {
	if ! command -v go >/dev/null 2>&1; then
		export PATH=/usr/local/go/bin:$PATH
	fi
	cd "$REPO_DIR"
	# With GOTOOLCHAIN=auto an older go downloads the toolchain go.mod names.
	say "go $(go env GOVERSION): go mod download"
	go mod download
	if [[ -x /usr/local/bin/staticcheck ]]; then
		say "staticcheck already installed ($(/usr/local/bin/staticcheck -version))"
	else
		say "installing staticcheck into /usr/local/bin"
		GOBIN=/usr/local/bin go install honnef.co/go/tools/cmd/staticcheck@latest
	fi
}

install_system_packages
check_tools
install_go_tools
say "dependencies ready"
