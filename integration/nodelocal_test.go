package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var shmNameLine = regexp.MustCompile(`(?m)^I main shm (\S+)$`)

// TestNodeLocalFilesRecreated restarts jobs as a requeue onto another node
// would find them: their files in /dev/shm (POSIX shared memory, named
// semaphores, Python's shared_memory), their scratch file and their log
// on this node's disk are gone. The restart re-creates them from the checkpoint, says so, and
// the jobs go on with every step logged once.
func TestNodeLocalFilesRecreated(t *testing.T) {
	e := setup(t)
	bins := buildSuite(t)
	entries := map[string]suiteEntry{}
	for _, en := range suiteEntries {
		entries[en.name] = en
	}
	type nodeCase struct{ entry, flavor string }
	var cases []nodeCase
	for _, name := range []string{"posix_shm", "posix_sem", "python_shm", "node_local"} {
		for _, fl := range []string{"user-v2", "root-v2"} {
			cases = append(cases, nodeCase{name, fl})
		}
	}
	runPool(2, len(cases), func(i int) {
		c := cases[i]
		t.Run(c.entry+"/"+c.flavor, func(t *testing.T) {
			entry := entries[c.entry]
			entry.needTools(t)
			r := &suiteRun{t: t, entry: entry, ticks: suiteTicks, bins: bins}
			r.j = newJob(t, e, e.pickFlavor(t, c.flavor))
			t.Cleanup(func() { cleanupSuiteJob(r.j.dir) })
			r.s = r.j.launch(nil, entry.argv(r.bins, r.j.path(suiteLog), r.ticks, "")...)
			r.waitProgress("launch")
			r.checkpoint("checkpoint --kill", "--kill")
			if code := r.s.waitExit(ckptTimeout); code != 143 {
				r.fatalf("checkpoint --kill", "supervisor exited with %d, want 143\n%s", code, outputTail(r.s))
			}
			r.j.waitJobGone(nil)

			// Another node: none of the job's files in /dev/shm, and
			// not its log either.
			gone, _ := filepath.Glob("/dev/shm/*" + filepath.Base(r.j.dir) + "*")
			for _, m := range shmNameLine.FindAllStringSubmatch(string(r.log()), -1) {
				gone = append(gone, "/dev/shm/"+m[1])
			}
			if len(gone) == 0 {
				r.fatalf("another node", "found none of the job's files in /dev/shm")
			}
			scratch, _ := filepath.Glob(r.j.path("*-node-scratch"))
			gone = append(append(gone, scratch...), r.j.path(suiteLog))
			for _, f := range gone {
				if err := os.Remove(f); err != nil {
					r.fatalf("another node", "%v", err)
				}
			}

			r.s = r.j.restart()
			r.waitProgress("restart")
			for _, f := range gone {
				if !r.s.outputContains("re-created " + f) {
					r.errorf("restart", "the restart does not say it re-created %s:\n%s", f, outputTail(r.s))
				}
			}
			r.finish()
		})
	})
}
