package engine

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// TestExecWithSignalQueued checks the injected execve of a container's
// restore when a signal is already queued to the stub: one that does
// nothing by default must not stop the exec, any other must fail it with
// a message that names the signal.
func TestExecWithSignalQueued(t *testing.T) {
	tests := []struct {
		sig     unix.Signal
		wantErr string
	}{
		{sig: 0},
		{sig: unix.SIGURG},
		{sig: unix.SIGCHLD},
		{sig: unix.SIGUSR1, wantErr: "stopped with user defined signal 1 instead"},
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.sig.String(), func(t *testing.T) {
			tr := ptrace.NewTracer()
			defer tr.Close()
			c := injecttest.Start(t, tr)
			if err := tr.SetOptions(c.PID, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACEEXEC); err != nil {
				t.Fatal(err)
			}
			if tc.sig != 0 {
				if err := unix.Tgkill(c.PID, c.PID, tc.sig); err != nil {
					t.Fatal(err)
				}
			}
			r := restorerFor(tr, c, &image.Process{PID: c.PID})
			err := r.exec(exe, []string{exe, "-test.run=^$"}, nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("exec with %v queued: %v", tc.sig, err)
				}
				if got, _ := os.Readlink("/proc/" + strconv.Itoa(c.PID) + "/exe"); got != exe {
					t.Fatalf("after the exec the stub runs %q, want %q", got, exe)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("exec with %v queued: error %v, want one containing %q", tc.sig, err, tc.wantErr)
			}
		})
	}
}
