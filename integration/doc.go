// Package integration holds the end-to-end tests of ckpt-apptainer: real jobs
// (small programs in testdata/ that verify their own state) are launched,
// checkpointed, killed and restarted through the built CLI, in every flavor
// the machine offers (root or an unprivileged user, each with a cgroup v2 job
// cgroup, a cgroup v1 freezer, or no cgroup at all), and the jobs' own output
// decides whether the restore was right.
//
// The tests need root, the CLI built at bin/ckpt-apptainer (make build) and the
// environment written by scripts/setup-test-env.sh; without them they skip,
// unless CI is set, in which case they fail. A full run takes several minutes:
//
//	go test -timeout 30m ./integration/
//
// The package itself only holds the checkers of the jobs' logs.
package integration
