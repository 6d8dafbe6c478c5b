package gpu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
)

// fakeNode writes a /proc/driver/nvidia with the given GPUs (UUID by bus
// id) and points ReadNode at it.
func fakeNode(t *testing.T, version string, gpus map[string]string) {
	t.Helper()
	root := t.TempDir()
	t.Setenv("CKPT_APPTAINER_NVIDIA_PROC", root)
	if err := os.WriteFile(filepath.Join(root, "version"), []byte(version), 0o644); err != nil {
		t.Fatal(err)
	}
	minor := 0
	for bus, uuid := range gpus {
		dir := filepath.Join(root, "gpus", bus)
		os.MkdirAll(dir, 0o755)
		info := "Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\nGPU UUID: \t " + uuid + "\nBus Location: \t " + bus +
			"\nDevice Minor: \t " + string(rune('0'+minor)) + "\nGPU Excluded:\t No\n"
		if err := os.WriteFile(filepath.Join(dir, "information"), []byte(info), 0o644); err != nil {
			t.Fatal(err)
		}
		minor++
	}
}

func TestParseDriverVersion(t *testing.T) {
	for in, want := range map[string]string{
		"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)  Mon Nov 3 2025\nGCC version: gcc 12\n": "580.159.04",
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n":                                                   "535.104.05",
	} {
		got, err := parseDriverVersion(in)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := parseDriverVersion("NVRM version: something else"); err == nil {
		t.Error("a version line without a version was accepted")
	}
}

func TestReadNode(t *testing.T) {
	fakeNode(t, "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build\n",
		map[string]string{"0000:1b:00.0": "GPU-aaaa"})
	n, err := ReadNode()
	if err != nil {
		t.Fatal(err)
	}
	if n.Driver != "580.159.04" || len(n.Devices) != 1 {
		t.Fatalf("node %+v", n)
	}
	d, ok := n.ByMinor(0)
	if !ok || d.Model != "NVIDIA H200" || d.UUID != "GPU-aaaa" || d.BusID != "0000:1b:00.0" {
		t.Errorf("device 0: %+v, %v", d, ok)
	}
	t.Setenv("CKPT_APPTAINER_NVIDIA_PROC", filepath.Join(t.TempDir(), "none"))
	if _, err := ReadNode(); !errors.Is(err, ErrNoDriver) {
		t.Errorf("no driver: %v, want ErrNoDriver", err)
	}
}

// TestPlan checks which nodes a GPU image is refused on, and that the
// refusal says why; a GPU of the same model stands in for a missing one.
func TestPlan(t *testing.T) {
	rec := &image.GPU{Driver: "580.159.04", Processes: []image.GPUProcess{
		{PID: 2, Devices: []image.GPUDevice{{Minor: 0, Model: "NVIDIA H200", UUID: "GPU-aaaa"}}},
	}}
	tests := []struct {
		name string
		n    *Node
		want string // "" when accepted
	}{
		{"same node", &Node{Driver: "580.159.04", Devices: []Device{{Minor: 0, Model: "NVIDIA H200", UUID: "GPU-aaaa"}}}, ""},
		{"another build of the driver", &Node{Driver: "580.170.01", Devices: []Device{{Minor: 1, Model: "NVIDIA H200", UUID: "GPU-aaaa"}}}, "the driver is 580.170.01, the checkpoint was taken with 580.159.04"},
		{"no driver", nil, "no NVIDIA driver"},
		{"other branch", &Node{Driver: "575.51.03", Devices: []Device{{Model: "NVIDIA H200", UUID: "GPU-aaaa"}}}, "the job has that driver's libcuda mapped"},
		{"another GPU of the model", &Node{Driver: "580.159.04", Devices: []Device{{Model: "NVIDIA H200", UUID: "GPU-bbbb"}}}, ""},
		{"a GPU of another model", &Node{Driver: "580.159.04", Devices: []Device{{Model: "NVIDIA A100", UUID: "GPU-cccc"}}}, "the job used NVIDIA H200 GPU-aaaa, and no GPU of that model is free among those this job was given (NVIDIA A100 GPU-cccc)"},
		{"no GPU", &Node{Driver: "580.159.04"}, "among those this job was given (none)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Plan(rec, tt.n, func(string) string { return "" })
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ne *node.Error
			if !errors.As(err, &ne) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v, want a node.Error saying %q", err, tt.want)
			}
			if tt.n == nil || tt.n.Driver != rec.Driver {
				if !strings.Contains(err.Error(), "the checkpoint needs: driver 580.159.04, NVIDIA H200 GPU-aaaa") {
					t.Errorf("%v: does not say what the checkpoint needs", err)
				}
			}
		})
	}
}

func TestDeviceMinor(t *testing.T) {
	for path, want := range map[string]int{"/dev/nvidia0": 0, "/dev/nvidia7": 7, "/dev/nvidiactl": -1, "/dev/nvidia-uvm": -1, "/dev/nvidia-uvm-tools": -1} {
		n, ok := deviceMinor(path)
		if want < 0 && ok || want >= 0 && (!ok || n != want) {
			t.Errorf("%s: %d, %v; want %d", path, n, ok, want)
		}
	}
}

// TestFindIgnoresOtherProcesses checks that a process without NVIDIA
// devices is not taken for a GPU process, and that a pid that is gone is
// left out.
func TestFindIgnoresOtherProcesses(t *testing.T) {
	if got := Find([]int{os.Getpid(), 1 << 30}); len(got) != 0 {
		t.Errorf("Find: %+v, want none", got)
	}
}
