package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

func TestPrintCheckReport(t *testing.T) {
	feature := func(name kernel.Feature, avail, disabled bool, detail string) checkFeature {
		i := kernel.Describe(name)
		return checkFeature{Status: kernel.Status{Name: name, Available: avail, Disabled: disabled, Detail: detail},
			What: i.What, Since: i.Since, Without: i.Without, Degrades: i.Degrades}
	}
	base := checkReport{Kernel: "5.10.0-32-amd64", Arch: "amd64", CapLastCap: 40, Features: []checkFeature{
		feature(kernel.Clone3, true, false, ""),
		feature(kernel.TimeNamespace, false, true, ""),
		feature(kernel.PtraceRseq, false, false, "PTRACE_GET_RSEQ_CONFIGURATION: EIO"),
	}}
	tests := []struct {
		name   string
		node   []checkItem
		degr   []string
		ok     bool
		want   []string
		absent []string
	}{
		{"checkpointable with losses", []checkItem{{Name: "ptrace", OK: true, Required: true, Detail: "fine"}},
			[]string{"time-namespace: clocks jump"}, true,
			[]string{"clone3          yes", "time-namespace  off", "ptrace-rseq     no",
				"ptrace-rseq: PTRACE_GET_RSEQ_CONFIGURATION: EIO", "loses this here:", "time-namespace: clocks jump"},
			[]string{"cannot be checkpointed"}},
		{"not checkpointable", []checkItem{{Name: "user namespaces", Required: true, Detail: "max_user_namespaces is 0"},
			{Name: "/dev/fuse", Detail: "missing"}}, nil, false,
			[]string{"user namespaces  NO", "/dev/fuse        no", "cannot be checkpointed"},
			[]string{"can be checkpointed,"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := base
			rep.Node, rep.Degradations, rep.Checkpointable = tt.node, tt.degr, tt.ok
			var b bytes.Buffer
			if err := printCheckReport(&b, &rep); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range tt.absent {
				if strings.Contains(b.String(), w) {
					t.Errorf("report has %q:\n%s", w, b.String())
				}
			}
		})
	}
}
