// Package cuda calls the NVIDIA driver's process checkpoint API in
// libcuda.so.1, loaded at run time without cgo. Only the helper program
// (cmd/ckpt-apptainer/cudahelper) imports it: loading the library brings
// the C runtime into the process, which the supervisor does without.
package cuda
