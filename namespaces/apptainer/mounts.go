package apptainer

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Parts of a mount table that differ between two runs of the same
// container, and what they are replaced with before comparing.
var volatilePaths = []struct {
	re   *regexp.Regexp
	with string
}{
	// Apptainer's per-container session directory, under its state
	// directory (/var/lib/apptainer, /usr/local/var/apptainer, ...).
	{regexp.MustCompile(`[^:,=]*/(?:apptainer|singularity)/mnt/session`), "<session>"},
	// Temporary sandboxes of --unsquash and similar.
	{regexp.MustCompile(`/rootfs-[0-9A-Za-z]+`), "/rootfs-*"},
	// Files handed over by descriptor: the image, or the restorer's stub.
	{regexp.MustCompile(`/proc/(?:self|[0-9]+)/fd/[0-9]+`), "/proc/self/fd/*"},
	// Loop devices of images mounted with the kernel's squashfs.
	{regexp.MustCompile(`^/dev/loop[0-9]+$`), "/dev/loop*"},
}

// volatileOptions are mount options whose values differ between runs:
// tmpfs sizes follow the host's memory, FUSE connections get a new
// descriptor and device at each start.
var volatileOptions = map[string]bool{
	"size": true, "nr_inodes": true, "nr_blocks": true, "fd": true, "dev": true,
}

// normPath replaces the volatile parts of a path or option value.
func normPath(s string) string {
	for _, v := range volatilePaths {
		s = v.re.ReplaceAllString(s, v.with)
	}
	return s
}

// normMount is a mount with its volatile parts replaced.
type normMount struct {
	dest, typ, source string
	opts              map[string]bool
}

// normalize replaces the volatile parts of m and drops volatile options.
func normalize(m specs.Mount) normMount {
	n := normMount{dest: normPath(m.Destination), typ: m.Type, source: normPath(m.Source), opts: map[string]bool{}}
	for _, o := range m.Options {
		k, _, _ := strings.Cut(o, "=")
		if volatileOptions[k] {
			continue
		}
		n.opts[normPath(o)] = true
	}
	return n
}

// mountKeys keys mounts by destination and, for mounts stacked on the same
// destination, by their place in the stack.
func mountKeys(ms []specs.Mount) (map[string]normMount, []string) {
	out := make(map[string]normMount, len(ms))
	var order []string
	seen := map[string]int{}
	for _, m := range ms {
		n := normalize(m)
		seen[n.dest]++
		key := n.dest
		if c := seen[n.dest]; c > 1 {
			key += " (stacked mount " + strconv.Itoa(c) + ")"
		}
		out[key] = n
		order = append(order, key)
	}
	return out, order
}

// CompareMounts returns the differences between two mount tables as
// namespaces.Mounts returns them, one human-readable line each, in the
// order of the recorded table then the current one: destinations that are
// gone or new, and type, source or option changes. What legitimately
// differs between two runs of the same container is ignored: session
// directory names, loop and FUSE device numbers and descriptors, tmpfs
// sizes, and /proc/self/fd/N paths (the restorer's stub). No lines means
// the tables match.
func CompareMounts(recorded, current []specs.Mount) []string {
	old, oldOrder := mountKeys(recorded)
	cur, curOrder := mountKeys(current)
	var out []string
	for _, k := range oldOrder {
		o := old[k]
		c, ok := cur[k]
		if !ok {
			out = append(out, fmt.Sprintf("%s: gone (was %s)", k, describeMount(o)))
			continue
		}
		if o.typ != c.typ {
			out = append(out, fmt.Sprintf("%s: type %s -> %s", k, o.typ, c.typ))
		}
		if o.source != c.source {
			out = append(out, fmt.Sprintf("%s: source %s -> %s", k, o.source, c.source))
		}
		if gone, added := optionDiff(o.opts, c.opts); len(gone)+len(added) > 0 {
			out = append(out, fmt.Sprintf("%s: options %s", k, describeOptionDiff(gone, added)))
		}
	}
	for _, k := range curOrder {
		if _, ok := old[k]; !ok {
			out = append(out, fmt.Sprintf("%s: new (%s)", k, describeMount(cur[k])))
		}
	}
	return out
}

// optionDiff returns the options only in a and only in b, sorted.
func optionDiff(a, b map[string]bool) (onlyA, onlyB []string) {
	for o := range a {
		if !b[o] {
			onlyA = append(onlyA, o)
		}
	}
	for o := range b {
		if !a[o] {
			onlyB = append(onlyB, o)
		}
	}
	sort.Strings(onlyA)
	sort.Strings(onlyB)
	return onlyA, onlyB
}

// describeOptionDiff words the options a mount lost and gained.
func describeOptionDiff(gone, added []string) string {
	var parts []string
	if len(gone) > 0 {
		parts = append(parts, "lost "+strings.Join(gone, ","))
	}
	if len(added) > 0 {
		parts = append(parts, "gained "+strings.Join(added, ","))
	}
	return strings.Join(parts, ", ")
}

// describeMount names a mount's type, source and, for a bind mount, the
// bound path inside the source filesystem.
func describeMount(n normMount) string {
	s := n.typ + " " + n.source
	for o := range n.opts {
		if strings.HasPrefix(o, "root=") {
			s += " " + o
		}
	}
	return s
}
