package ptrace

import "testing"

func TestResolveRestart(t *testing.T) {
	neg := func(n int64) uint64 { return uint64(-n) }
	tests := []struct {
		name            string
		in              Regs
		wantRax, wantIP uint64
	}{
		{"restartsys re-executes", Regs{Orig_rax: 202, Rax: neg(ERESTARTSYS), Rip: 0x1002}, 202, 0x1000},
		{"restartnointr re-executes", Regs{Orig_rax: 7, Rax: neg(ERESTARTNOINTR), Rip: 0x2002}, 7, 0x2000},
		{"restartnohand re-executes", Regs{Orig_rax: 34, Rax: neg(ERESTARTNOHAND), Rip: 0x3002}, 34, 0x3000},
		{"clock_nanosleep restart block re-executes", Regs{Orig_rax: 230, Rax: neg(ERESTART_RESTARTBLOCK), Rip: 0x4002}, 230, 0x4000},
		{"nanosleep restart block re-executes", Regs{Orig_rax: 35, Rax: neg(ERESTART_RESTARTBLOCK), Rip: 0x4002}, 35, 0x4000},
		{"restart_syscall restart block becomes EINTR", Regs{Orig_rax: 219, Rax: neg(ERESTART_RESTARTBLOCK), Rip: 0x4002}, neg(4), 0x4002},
		{"finished syscall untouched", Regs{Orig_rax: 1, Rax: 5, Rip: 0x5002}, 5, 0x5002},
		{"user code untouched", Regs{Orig_rax: ^uint64(0), Rax: neg(ERESTARTSYS), Rip: 0x6000}, neg(ERESTARTSYS), 0x6000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.in
			ResolveRestart(&r)
			if r.Rax != tt.wantRax || r.Rip != tt.wantIP || r.Orig_rax != ^uint64(0) {
				t.Fatalf("got rax %#x rip %#x orig_rax %#x, want rax %#x rip %#x orig_rax -1", r.Rax, r.Rip, r.Orig_rax, tt.wantRax, tt.wantIP)
			}
		})
	}
}
