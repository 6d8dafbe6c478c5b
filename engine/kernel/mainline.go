package kernel

import (
	"strconv"
	"strings"
)

// configDependent are features a kernel of any version may be built
// without, or a site may turn off: a version says nothing about them.
var configDependent = map[Feature]bool{
	TimeNamespace: true, TimeNamespaceVfork: true, NSLastPID: true, SoftDirty: true,
	CgroupV1Freezer: true, CgroupV2Freezer: true, Userfaultfd: true, UserfaultfdWPAsync: true,
	PagemapScan: true, Rseq: true,
}

// MainlineHas says whether a mainline kernel of the given release has f:
// known is false for features the build configuration or the site decides.
// Enterprise kernels backport features to older versions, so the tool
// never decides by version; the tests check the probes against it on
// kernels that are mainline.
func MainlineHas(f Feature, release string) (has, known bool) {
	if configDependent[f] {
		return false, false
	}
	return !versionLess(parseVersion(release), parseVersion(Describe(f).Since)), true
}

// parseVersion reads "5.10.0-32-amd64" or "6.1" as {major, minor}.
func parseVersion(s string) [2]int {
	var v [2]int
	parts := strings.SplitN(s, ".", 3)
	for i := 0; i < 2 && i < len(parts); i++ {
		n := parts[i]
		if j := strings.IndexFunc(n, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			n = n[:j]
		}
		v[i], _ = strconv.Atoi(n)
	}
	return v
}

func versionLess(a, b [2]int) bool {
	return a[0] < b[0] || a[0] == b[0] && a[1] < b[1]
}
