package gpu

import (
	"errors"
	"strings"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
)

var testNode = &Node{Driver: "580.159.04", Devices: []Device{
	{Minor: 0, Model: "NVIDIA H200", UUID: "GPU-aaaa"},
	{Minor: 1, Model: "NVIDIA H200", UUID: "GPU-bbbb"},
	{Minor: 2, Model: "NVIDIA A100", UUID: "GPU-cccc"},
	{Minor: 3, Model: "NVIDIA H200", UUID: "GPU-dddd"},
}}

func TestGiven(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{nil, "GPU-aaaa,GPU-bbbb,GPU-cccc,GPU-dddd"},
		{map[string]string{"SLURM_STEP_GPUS": "3,1", "CUDA_VISIBLE_DEVICES": "0"}, "GPU-dddd,GPU-bbbb"},
		{map[string]string{"SLURM_JOB_GPUS": "2"}, "GPU-cccc"},
		{map[string]string{"CUDA_VISIBLE_DEVICES": "GPU-bbbb,GPU-dd"}, "GPU-bbbb,GPU-dddd"},
		{map[string]string{"CUDA_VISIBLE_DEVICES": "1,9"}, "GPU-bbbb"},
	}
	for _, tt := range tests {
		var got []string
		for _, d := range Given(testNode, func(k string) string { return tt.env[k] }) {
			got = append(got, d.UUID)
		}
		if strings.Join(got, ",") != tt.want {
			t.Errorf("%v: %v, want %s", tt.env, got, tt.want)
		}
	}
}

// TestRemap maps the image's GPUs onto those the job was given: kept where
// still given, else onto a free GPU of the same model; refused when none.
func TestRemap(t *testing.T) {
	rec := &image.GPU{Processes: []image.GPUProcess{
		{PID: 2, Devices: []image.GPUDevice{{Model: "NVIDIA H200", UUID: "GPU-aaaa"}, {Model: "NVIDIA H200", UUID: "GPU-bbbb"}}},
		{PID: 3, Devices: []image.GPUDevice{{Model: "NVIDIA H200", UUID: "GPU-bbbb"}}},
	}}
	dev := func(uuids ...string) []Device {
		var out []Device
		for _, u := range uuids {
			for _, d := range testNode.Devices {
				if d.UUID == u {
					out = append(out, d)
				}
			}
		}
		return out
	}
	tests := []struct {
		name  string
		given []Device
		want  string // old>new,...; "" when refused
		moved bool
	}{
		{"same GPUs", dev("GPU-aaaa", "GPU-bbbb"), "GPU-aaaa>GPU-aaaa,GPU-bbbb>GPU-bbbb", false},
		{"one kept, one moved", dev("GPU-dddd", "GPU-bbbb"), "GPU-aaaa>GPU-dddd,GPU-bbbb>GPU-bbbb", true},
		{"both moved", dev("GPU-dddd", "GPU-cccc", "GPU-aaaa"), "GPU-aaaa>GPU-aaaa,GPU-bbbb>GPU-dddd", true},
		{"too few of the model", dev("GPU-dddd", "GPU-cccc"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pairs, err := Remap(rec, tt.given)
			if tt.want == "" {
				var ne *node.Error
				if !errors.As(err, &ne) || !strings.Contains(err.Error(), "no GPU of that model is free") {
					t.Fatalf("Remap: %v, want a node.Error saying no GPU of that model is free", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pairs {
				got = append(got, p.Old+">"+p.New)
			}
			if strings.Join(got, ",") != tt.want || Moved(pairs) != tt.moved {
				t.Errorf("pairs %v (moved %v), want %s (moved %v)", got, Moved(pairs), tt.want, tt.moved)
			}
		})
	}
}

func TestUUIDBytes(t *testing.T) {
	b, err := UUIDBytes("GPU-2f1c4b6e-0a1b-2c3d-4e5f-60718293a4b5")
	if err != nil || b[0] != 0x2f || b[15] != 0xb5 {
		t.Errorf("%x, %v", b, err)
	}
	if _, err := UUIDBytes("GPU-xyz"); err == nil {
		t.Error("a malformed UUID was accepted")
	}
}
