package inject

import "unsafe"

// SizeOf is the size of a T as the kernel reads it: T mirrors a kernel
// structure (struct clone_args, struct prctl_mm_map...) field for field.
func SizeOf[T any]() uint64 {
	var v T
	return uint64(unsafe.Sizeof(v))
}

// WriteValue copies v, a mirror of a kernel structure, into the process
// at addr, byte for byte.
func WriteValue[T any](p *Process, addr uint64, v *T) error {
	return p.Write(addr, unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v)))
}
