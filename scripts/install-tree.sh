#!/bin/bash
# install-tree.sh BINDIR ROOT VERSION: lays out an installed ckpt-apptainer
# under ROOT from the binaries in BINDIR (make install, make release). The
# man page and completions are written by the binary from its own command
# line definition.
set -euo pipefail
bindir=$1 root=$2 version=$3
[[ -x $bindir/ckpt-apptainer ]] || { echo "install-tree.sh: no $bindir/ckpt-apptainer: run make build" >&2; exit 1; }
bin=$bindir/ckpt-apptainer
install -d "$root/bin" "$root/share/man/man1" "$root/share/bash-completion/completions" \
	"$root/share/zsh/site-functions" "$root/share/fish/vendor_completions.d" \
	"$root/share/modulefiles/ckpt-apptainer"
install -m 0755 "$bin" "$root/bin/ckpt-apptainer"
if [[ -x $bindir/ckpt-apptainer-cuda ]]; then
	install -m 0755 "$bindir/ckpt-apptainer-cuda" "$root/bin/ckpt-apptainer-cuda"
fi
gen() { "$bin" generate "$1" > "$2.tmp" && chmod 0644 "$2.tmp" && mv "$2.tmp" "$2"; }
gen man "$root/share/man/man1/ckpt-apptainer.1"
gen bash "$root/share/bash-completion/completions/ckpt-apptainer"
gen zsh "$root/share/zsh/site-functions/_ckpt-apptainer"
gen fish "$root/share/fish/vendor_completions.d/ckpt-apptainer.fish"
gen modulefile "$root/share/modulefiles/ckpt-apptainer/$version"
echo "installed ckpt-apptainer $version in $root"
