package engine

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// detachWhenStopped detaches threads that were asked to stop and have not
// reported it yet, as each of them stops, for up to timeout. They are
// polled together, because which one can stop first is not known: a
// process that vforked stops only once its child, maybe one of the others,
// has exec'd or exited. A thread that stopped for a signal first gets that
// signal back; the others get stopSig(tid). Those still running at the
// timeout stay attached: a tracer run by ptrace.Run lets them go when it
// ends.
func detachWhenStopped(t *ptrace.Tracer, tids []int, timeout time.Duration, stopSig func(tid int) int) {
	deadline := time.Now().Add(timeout)
	for spin := 0; len(tids) > 0 && time.Now().Before(deadline); spin++ {
		left := tids[:0]
		for _, tid := range tids {
			st, stopped, err := t.PollStop(tid)
			if err != nil {
				continue // exited
			}
			if !stopped {
				left = append(left, tid)
				continue
			}
			sig := stopSig(tid)
			if uint32(st.Status)>>16 == 0 && st.Signal() != unix.SIGTRAP {
				sig = int(st.Signal())
			}
			t.Detach(tid, sig)
		}
		tids = left
		ptrace.Backoff(spin)
	}
}
