package engine

import (
	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// restorerFor makes a restorer working on a tracee, as the restore does
// on a stub.
func restorerFor(tr *ptrace.Tracer, c *injecttest.Tracee, p *image.Process) *restorer {
	log := logrus.New()
	log.SetLevel(logrus.DebugLevel)
	return &restorer{Process: *c.Proc, t: tr, log: log, proc: p, threads: []*ptrace.Thread{c.Thread}}
}
