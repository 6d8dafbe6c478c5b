package engine

import (
	"os/exec"
	"testing"
	"time"
)

// TestDescendantsWhileChildrenComeAndGo walks a shell that forks and
// reaps short-lived children as fast as it can, as the tree of a running
// job is walked before it is frozen: a child that is gone by the time it
// is visited is left out, never an error.
func TestDescendantsWhileChildrenComeAndGo(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "while :; do /bin/true; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	deadline := time.Now().Add(2 * time.Second)
	walks := 0
	for time.Now().Before(deadline) {
		if _, err := descendants(cmd.Process.Pid); err != nil {
			t.Fatalf("walk %d: %v", walks, err)
		}
		walks++
	}
	t.Logf("%d walks", walks)
}
