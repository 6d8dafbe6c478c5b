# debian-archive.sh is sourced by the scripts that need the machine's own
# Debian archive (debootstrap of test images, kernels for the qemu tests):
# only the machine's mirror is reachable, and its address and keyring are read
# from /etc/apt/sources.list{,.d}, never written into the repository.

# archive_entry prints "URI SUITE SIGNED_BY" for the machine's main Debian
# archive entry: the first enabled deb entry whose URI is a Debian archive
# (not security), with its first suite that is a release (no -updates,
# -backports or -security). deb822 files first, then one-line lists. The
# entry install-deps.sh adds for unstable is skipped: it is not the
# machine's release.
archive_entry() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f && $(basename "$f") != ckpt-apptainer-* ]] || continue
		awk '
			function flush(   n, s, i) {
				if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris ~ /debian/ && uris !~ /security/) {
					n = split(suites, s, /[ \t]+/)
					for (i = 1; i <= n; i++) {
						if (s[i] != "" && s[i] !~ /-/) {
							split(uris, u, /[ \t]+/)
							printf "%s %s %s\n", u[1], s[i], (signed ~ /^\// ? signed : "-")
							exit
						}
					}
				}
				types = uris = suites = signed = enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]/ { next }
			{
				key = tolower(substr($0, 1, index($0, ":") - 1))
				val = substr($0, index($0, ":") + 1)
				sub(/^[ \t]+/, "", val); sub(/[ \t]+$/, "", val)
				if (key == "types") types = val
				else if (key == "uris") uris = val
				else if (key == "suites") suites = val
				else if (key == "signed-by") signed = val
				else if (key == "enabled") enabled = tolower(val)
			}
			END { flush() }
		' "$f"
	done | head -n 1 | grep . && return 0
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] || continue
		awk '
			$1 != "deb" { next }
			{
				opts = ""; i = 2
				if ($2 ~ /^\[/) {
					while (i <= NF) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break }; i++ }
				}
				uri = $i; suite = $(i + 1)
				if (uri !~ /debian/ || uri ~ /security/ || suite ~ /-/) next
				signed = "-"
				if (match(opts, /signed-by=\/[^] ]+/)) signed = substr(opts, RSTART + 10, RLENGTH - 10)
				printf "%s %s %s\n", uri, suite, signed
				exit
			}
		' "$f"
	done | head -n 1 | grep .
}
