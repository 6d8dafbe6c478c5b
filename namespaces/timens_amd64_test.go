package namespaces

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// runEntry runs the time namespace entry program with nsFile on fd 3 (none
// when nil) and returns its exit status, stdout and stderr.
func runEntry(t *testing.T, dropCaps bool, nsFile *os.File, ambient []uintptr, argv ...string) (int, string, string) {
	t.Helper()
	f, err := kernel.ExecMemfd("ckpt-timens-test", timensEntryELF(dropCaps))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(kernel.ProcPath(f), argv...)
	cmd.Args[0] = "ckpt-timens"
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if nsFile != nil {
		cmd.ExtraFiles = []*os.File{nsFile}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{AmbientCaps: ambient}
	err = cmd.Run()
	status := 0
	if ee, ok := err.(*exec.ExitError); ok {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return status, out.String(), errOut.String()
}

func TestTimensEntryWithoutNamespace(t *testing.T) {
	status, out, errOut := runEntry(t, true, nil, nil, "/bin/true")
	if status != timensEntrySetnsFailed || out != "" || errOut != timensSetnsMsg {
		t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", status, out, errOut, timensEntrySetnsFailed, timensSetnsMsg)
	}
}

// TestTimensEntryRunsTarget has the program join the test's own time
// namespace (which needs CAP_SYS_ADMIN there, so root) and checks that the
// target runs with its argv, without fd 3, and with or without the
// ambient capability the program was given.
func TestTimensEntryRunsTarget(t *testing.T) {
	ns := ownTimeNamespace(t)
	script := `echo "$0 $1"; grep CapAmb /proc/self/status; [ -e /proc/self/fd/3 ] && echo "fd 3 open"; true`
	for _, drop := range []bool{true, false} {
		status, out, errOut := runEntry(t, drop, ns, []uintptr{unix.CAP_SYS_ADMIN}, "/bin/sh", "sh", "-c", script, "argv0", "arg1")
		if status != 0 {
			t.Fatalf("drop %v: exit %d, stderr %q", drop, status, errOut)
		}
		if !strings.HasPrefix(out, "argv0 arg1\n") || strings.Contains(out, "fd 3 open") {
			t.Errorf("drop %v: output %q: want the target's argv and no fd 3", drop, out)
		}
		wantAmb := "0000000000200000" // CAP_SYS_ADMIN
		if drop {
			wantAmb = "0000000000000000"
		}
		if !strings.Contains(out, "CapAmb:\t"+wantAmb) {
			t.Errorf("drop %v: output %q: want CapAmb %s", drop, out, wantAmb)
		}
	}
}

func TestTimensEntryExecFails(t *testing.T) {
	ns := ownTimeNamespace(t)
	status, _, errOut := runEntry(t, true, ns, nil, "/nonexistent", "x")
	if status != timensEntryExecFailed || errOut != timensExecMsg {
		t.Errorf("exit %d, stderr %q; want %d and %q", status, errOut, timensEntryExecFailed, timensExecMsg)
	}
}

// ownTimeNamespace opens the test's own time namespace, which the entry
// program may join as root.
func ownTimeNamespace(t *testing.T) *os.File {
	t.Helper()
	if os.Getuid() != 0 || !kernel.Has(kernel.TimeNamespace) {
		t.Skip("needs root and time namespaces")
	}
	ns, err := os.Open("/proc/self/ns/time")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}
