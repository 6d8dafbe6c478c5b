package gpu

import (
	"fmt"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
)

// Record describes the job's GPU processes for the image: pids are their
// pids in the job, in the order of procs.
func Record(n *Node, cudaVersion int, procs []Process, pids []int, timings []Timing) *image.GPU {
	rec := &image.GPU{Driver: n.Driver, CUDA: cudaVersion}
	for i, p := range procs {
		gp := image.GPUProcess{PID: pids[i]}
		for _, m := range p.Minors {
			d, ok := n.ByMinor(m)
			if !ok {
				d = Device{Minor: m, Model: "unknown", UUID: "unknown"}
			}
			gp.Devices = append(gp.Devices, image.GPUDevice{Minor: d.Minor, Model: d.Model, UUID: d.UUID, BusID: d.BusID})
		}
		for _, tm := range timings {
			if tm.PID == p.PID {
				gp.LockNs, gp.CheckpointNs, gp.HostBytes = tm.Lock.Nanoseconds(), tm.Checkpoint.Nanoseconds(), tm.Moved
			}
		}
		rec.Processes = append(rec.Processes, gp)
	}
	return rec
}

// CheckNode refuses a node whose driver cannot put the recorded processes
// back on a GPU: no NVIDIA driver (n is nil), or another driver version.
// The error lists what the image needs beside what the node has.
func CheckNode(rec *image.GPU, n *Node) error {
	var why []string
	if n == nil {
		why = append(why, "this node has no NVIDIA driver (no /proc/driver/nvidia)")
	} else {
		if n.Driver != rec.Driver {
			// The job has the driver's user-space library (libcuda.so of
			// that version) mapped, and the restore maps the same file
			// again; another build of the driver comes with another one.
			why = append(why, fmt.Sprintf("the driver is %s, the checkpoint was taken with %s (the job has that driver's libcuda mapped: restart where the driver is %s)", n.Driver, rec.Driver, rec.Driver))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return &node.Error{Err: fmt.Errorf("the job's GPU processes cannot be restored here: %s\n  the checkpoint needs: %s\n  this node has:        %s",
		strings.Join(why, "; "), describeRecord(rec), describeNode(n))}
}

// Plan checks the node (CheckNode) and maps the image's GPUs onto those
// the job was given here (Given, from env), for the restore.
func Plan(rec *image.GPU, n *Node, env func(string) string) ([]Pair, error) {
	if err := CheckNode(rec, n); err != nil {
		return nil, err
	}
	return Remap(rec, Given(n, env))
}

func describeRecord(rec *image.GPU) string {
	seen := map[string]bool{}
	var devs []string
	for _, p := range rec.Processes {
		for _, d := range p.Devices {
			if !seen[d.UUID] {
				seen[d.UUID] = true
				devs = append(devs, d.Model+" "+d.UUID)
			}
		}
	}
	return fmt.Sprintf("driver %s, %s", rec.Driver, strings.Join(devs, ", "))
}

func describeNode(n *Node) string {
	if n == nil {
		return "no NVIDIA driver"
	}
	devs := []string{}
	for _, d := range n.Devices {
		devs = append(devs, d.Model+" "+d.UUID)
	}
	if len(devs) == 0 {
		devs = append(devs, "no GPU")
	}
	return fmt.Sprintf("driver %s, %s", n.Driver, strings.Join(devs, ", "))
}
