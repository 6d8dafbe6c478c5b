package namespaces

import (
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestNamespacesOfJob(t *testing.T) {
	sb, _ := startWithOutput(t, Options{TimeNamespace: true})
	hostPID, _, err := sb.Run([]string{"sleep", "1000"}, jobEnv, "/")
	if err != nil {
		t.Fatal(err)
	}
	job, err := Namespaces(hostPID)
	if err != nil {
		t.Fatalf("Namespaces: %v", err)
	}
	byType := map[specs.LinuxNamespaceType]string{}
	for _, ns := range job {
		byType[ns.Type] = ns.Path
	}
	// The sandbox's own namespaces differ from the test's; the others are shared.
	tests := []struct {
		typ     specs.LinuxNamespaceType
		file    string
		private bool
	}{
		{specs.UserNamespace, "user", true},
		{specs.PIDNamespace, "pid", true},
		{specs.MountNamespace, "mnt", true},
		{specs.TimeNamespace, "time", true},
		{specs.NetworkNamespace, "net", false},
		{specs.IPCNamespace, "ipc", true},
		{specs.UTSNamespace, "uts", false},
	}
	for _, tt := range tests {
		want := fmt.Sprintf("/proc/%d/ns/%s", hostPID, tt.file)
		if byType[tt.typ] != want {
			t.Errorf("%s namespace path %q, want %q", tt.typ, byType[tt.typ], want)
			continue
		}
		jobNS, err1 := os.Readlink(want)
		ownNS, err2 := os.Readlink("/proc/self/ns/" + tt.file)
		if err1 != nil || err2 != nil {
			t.Fatalf("readlink: %v %v", err1, err2)
		}
		if (jobNS != ownNS) != tt.private {
			t.Errorf("%s: job %s, test %s, want private=%v", tt.typ, jobNS, ownNS, tt.private)
		}
	}
	if _, err := Namespaces(1 << 30); err == nil {
		t.Error("Namespaces of a missing pid succeeded")
	}
}

func TestMountsOfJob(t *testing.T) {
	sb, _ := startWithOutput(t, Options{})
	hostPID, _, err := sb.Run([]string{"sleep", "1000"}, jobEnv, "/")
	if err != nil {
		t.Fatal(err)
	}
	job, err := Mounts(hostPID)
	if err != nil {
		t.Fatalf("Mounts: %v", err)
	}
	own, err := Mounts(os.Getpid())
	if err != nil {
		t.Fatalf("Mounts: %v", err)
	}
	// The job sees the test's mounts plus its own /proc on top.
	if len(job) != len(own)+1 {
		t.Errorf("job has %d mounts, test %d; want one more", len(job), len(own))
	}
	last := job[len(job)-1]
	if last.Destination != "/proc" || last.Type != "proc" {
		t.Errorf("last job mount %+v, want the sandbox's /proc", last)
	}
	if _, err := Mounts(1 << 30); err == nil {
		t.Error("Mounts of a missing pid succeeded")
	}
}

func TestSpecMount(t *testing.T) {
	tests := []struct {
		name string
		in   mountinfo.Info
		want specs.Mount
	}{
		{
			name: "whole filesystem",
			in:   mountinfo.Info{Mountpoint: "/proc", FSType: "proc", Source: "proc", Root: "/", Options: "rw,nosuid,nodev,noexec,relatime", VFSOptions: "rw"},
			want: specs.Mount{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"rw", "nosuid", "nodev", "noexec", "relatime"}},
		},
		{
			name: "bind of a directory",
			in:   mountinfo.Info{Mountpoint: "/data", FSType: "ext4", Source: "/dev/vda", Root: "/home/u/data", Options: "ro,relatime", VFSOptions: "rw,discard"},
			want: specs.Mount{Destination: "/data", Type: "ext4", Source: "/dev/vda", Options: []string{"ro", "relatime", "rw", "discard", "root=/home/u/data"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := specMount(&tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("specMount = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseTimensOffsets(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		mono, boot time.Duration
		wantErr    bool
	}{
		{"zero", "monotonic           0         0\nboottime            0         0\n", 0, 0, false},
		{"positive", "monotonic 3600000 0\nboottime 1 500000000\n", 1000 * time.Hour, 1500 * time.Millisecond, false},
		{"negative", "monotonic -2 500000000\nboottime 0 0\n", -1500 * time.Millisecond, 0, false},
		{"numeric ids", "1 5 0\n7 6 0\n", 5 * time.Second, 6 * time.Second, false},
		{"missing boottime", "monotonic 0 0\n", 0, 0, true},
		{"garbage", "monotonic x 0\nboottime 0 0\n", 0, 0, true},
		{"unknown clock", "realtime 0 0\n", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mono, boot, err := parseTimensOffsets([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if mono != tt.mono || boot != tt.boot {
				t.Errorf("got %v %v, want %v %v", mono, boot, tt.mono, tt.boot)
			}
		})
	}
}

func TestTimensLine(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "monotonic 0 0\n"},
		{1000 * time.Hour, "monotonic 3600000 0\n"},
		{1500 * time.Millisecond, "monotonic 1 500000000\n"},
		{-1500 * time.Millisecond, "monotonic -2 500000000\n"},
		{-time.Second, "monotonic -1 0\n"},
	}
	for _, tt := range tests {
		if got := timensLine("monotonic", tt.d); got != tt.want {
			t.Errorf("timensLine(%v) = %q, want %q", tt.d, got, tt.want)
		}
		// What is written must read back as the same offset.
		mono, _, err := parseTimensOffsets([]byte(timensLine("monotonic", tt.d) + "boottime 0 0\n"))
		if err != nil || mono != tt.d {
			t.Errorf("round trip of %v: %v, %v", tt.d, mono, err)
		}
	}
}
