// Package gpu checkpoints the device state of a job's CUDA processes
// through the NVIDIA driver's process checkpoint API.
//
// Called from outside on a running CUDA process, the driver's lock and
// checkpoint move all its device state into the process's host memory and
// close its /dev/nvidia* descriptors and device mappings: it becomes a
// plain CPU process, which the engine dumps and restores like any other.
// Restore and unlock put it back on the GPU, on the node that took the
// checkpoint or, after a restart, on the node it came back on.
//
// Find tells the job's GPU processes from their /proc entries. Suspend
// locks every one of them (so that none runs GPU work while another is
// being checkpointed), then checkpoints them; whatever fails on the way,
// what was done is undone and the job stays on the GPU. Resume restores
// and unlocks them. The node's GPUs and driver come from
// /proc/driver/nvidia, with no library loaded; CheckNode compares them with
// what an image needs before a restart starts anything.
//
// The driver API lives in libcuda.so.1, which the supervisor never loads:
// a short-lived helper process (ckpt-apptainer-cuda, package
// engine/gpu/cuda) makes the calls, driven over a pipe by Helper, so that
// the supervisor builds without cgo, runs where there is no NVIDIA
// software, and keeps no driver state.
package gpu
