// Command ckpt-apptainer-cuda makes the NVIDIA driver's process checkpoint
// calls for the ckpt-apptainer supervisor, which starts it when a job has
// GPU processes and sends it one JSON request per line on stdin (see
// package engine/gpu). It loads libcuda.so.1, which the supervisor never
// does, and ends when its stdin does.
package main

import (
	"fmt"
	"os"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/gpu"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/gpu/cuda"
)

func main() {
	d, err := cuda.Open()
	var drv gpu.Driver
	if d != nil {
		drv = d
	}
	if err := gpu.Serve(drv, err, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "ckpt-apptainer-cuda: %v\n", err)
		os.Exit(1)
	}
}
