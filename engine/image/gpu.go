package image

// GPU is what a job's GPU processes held, recorded by the checkpoint that
// moved their device state into host memory (the driver's process
// checkpoint) before the dump.
type GPU struct {
	// Driver is the NVIDIA kernel driver's version ("580.159.04").
	Driver string `json:"driver"`
	// CUDA is the CUDA driver API version the driver offers (13000 for
	// 13.0), as cuDriverGetVersion says.
	CUDA int `json:"cuda,omitempty"`
	// Processes are the job's processes that used a GPU.
	Processes []GPUProcess `json:"processes"`
}

// GPUProcess is one process of the job that used a GPU.
type GPUProcess struct {
	// PID is the process's pid in the job, as in ProcessRef.
	PID int `json:"pid"`
	// Devices are the GPUs it had open.
	Devices []GPUDevice `json:"devices"`
	// LockNs and CheckpointNs are how long the driver took to lock the
	// process and to move its device state into host memory.
	LockNs       int64 `json:"lock_ns"`
	CheckpointNs int64 `json:"checkpoint_ns"`
	// HostBytes is how much the process's resident memory grew across the
	// driver's checkpoint: about the device memory it held.
	HostBytes int64 `json:"host_bytes"`
}

// GPUDevice is one GPU as the node's driver describes it.
type GPUDevice struct {
	// Minor is the device's /dev/nvidiaN number on the node that took the
	// checkpoint.
	Minor int    `json:"minor"`
	Model string `json:"model"`
	UUID  string `json:"uuid"`
	// BusID is the PCI location ("0000:1b:00.0").
	BusID string `json:"bus_id,omitempty"`
}
