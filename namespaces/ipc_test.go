package namespaces

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestSandboxIPC checks that the job's System V objects and the host's do
// not see each other, unless the sandbox shares the host's IPC namespace.
func TestSandboxIPC(t *testing.T) {
	// A key no other test uses, made unique per run.
	hostKey := 0x6b700000 | os.Getpid()&0xffff
	hostID, err := unix.SysvShmGet(hostKey, 4096, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	if err != nil {
		t.Fatalf("shmget on the host: %v", err)
	}
	t.Cleanup(func() { unix.SysvShmCtl(hostID, unix.IPC_RMID, nil) })
	hostKeyText := fmt.Sprintf("%d", hostKey)

	tests := []struct {
		name      string
		opts      Options
		own       bool
		seesHosts bool
	}{
		{"own namespace", Options{}, true, false},
		{"shared with the host", Options{SharedIPC: true}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, out := startWithOutput(t, tt.opts)
			hostPID, _, err := sb.Run([]string{"/bin/sh", "-c", "cat /proc/sysvipc/shm; sleep 1000"}, jobEnv, "/")
			if err != nil {
				t.Fatal(err)
			}
			own, err := Own(hostPID, specs.IPCNamespace)
			if err != nil {
				t.Fatalf("Own: %v", err)
			}
			if own != tt.own {
				t.Errorf("Own(job, ipc) = %v, want %v", own, tt.own)
			}
			// Give the shell time to print the table before reading it.
			var text string
			for range 100 {
				b, _ := os.ReadFile(out.Name())
				if text = string(b); strings.Contains(text, "shmid") {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(text, "shmid") {
				t.Fatalf("the job printed no /proc/sysvipc/shm table: %q", text)
			}
			sees := false
			for _, line := range strings.Split(text, "\n") {
				if f := strings.Fields(line); len(f) > 0 && f[0] == hostKeyText {
					sees = true
				}
			}
			if sees != tt.seesHosts {
				t.Errorf("job sees the host's segment: %v, want %v; table:\n%s", sees, tt.seesHosts, text)
			}
		})
	}
}

func TestNamespacesOwn(t *testing.T) {
	self := os.Getpid()
	for _, typ := range []specs.LinuxNamespaceType{specs.IPCNamespace, specs.UserNamespace, specs.MountNamespace} {
		own, err := Own(self, typ)
		if err != nil {
			t.Fatalf("Own(self, %s): %v", typ, err)
		}
		if own {
			t.Errorf("Own(self, %s) = true, want false", typ)
		}
	}
	if _, err := Own(self, "bogus"); err == nil {
		t.Error("Own accepted an unknown namespace kind")
	}
	if _, err := Own(1<<30, specs.IPCNamespace); err == nil {
		t.Error("Own of a missing pid succeeded")
	}
}
