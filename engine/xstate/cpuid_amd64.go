package xstate

// cpuid executes the CPUID instruction.
func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// xgetbv0 reads XCR0; only valid where CPUID says the OS enabled XSAVE.
func xgetbv0() (eax, edx uint32)
