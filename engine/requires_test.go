package engine

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

func TestRequirements(t *testing.T) {
	withRseq := &image.Process{Threads: []image.Thread{{}, {Rseq: &image.Rseq{Ptr: 0x1000}}}}
	plain := &image.Process{Threads: []image.Thread{{}}}
	tests := []struct {
		name  string
		m     image.Manifest
		procs []*image.Process
		want  []string
	}{
		{"nothing", image.Manifest{}, []*image.Process{plain}, []string{}},
		{"time namespace", image.Manifest{Time: &image.TimeNamespace{}}, []*image.Process{plain}, []string{"time-namespace"}},
		{"rseq in a second thread", image.Manifest{}, []*image.Process{plain, withRseq}, []string{"rseq"}},
		{"both, sorted", image.Manifest{Time: &image.TimeNamespace{}}, []*image.Process{withRseq}, []string{"rseq", "time-namespace"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := requirements(&tt.m, tt.procs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("requirements = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckRequirements(t *testing.T) {
	full := &kernel.Set{Release: "6.18", Features: []kernel.Status{
		{Name: kernel.TimeNamespace, Available: true}, {Name: kernel.Rseq, Available: true},
		{Name: kernel.Clone3SetTID, Available: true}, {Name: kernel.NSLastPID, Available: true},
	}}
	noTimens := full.Without(kernel.TimeNamespace)
	noPIDs := full.Without(kernel.Clone3SetTID, kernel.NSLastPID)
	tests := []struct {
		name     string
		set      *kernel.Set
		requires []string
		noTimens bool
		wantErr  []string
		wantHint bool
	}{
		{"all there", full, []string{"rseq", "time-namespace"}, false, nil, false},
		{"old image, no list", noTimens, nil, false, nil, false},
		{"time namespace missing", noTimens, []string{"time-namespace"}, false, []string{"time-namespace", "switched off"}, true},
		{"given up with --no-timens", noTimens, []string{"time-namespace"}, true, nil, false},
		{"no way to set pids", noPIDs, nil, false, []string{"clone3-set-tid or ns-last-pid"}, false},
	}
	t.Cleanup(func() { kernel.Adopt(nil) })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kernel.Adopt(tt.set)
			err := CheckRequirements(&image.Manifest{Generation: 7, Requires: tt.requires}, tt.noTimens)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var re *RequirementError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want a RequirementError", err)
			}
			for _, w := range append(tt.wantErr, "generation 7") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
			if got := strings.Contains(err.Error(), "--no-timens"); got != tt.wantHint {
				t.Errorf("%q: mentions --no-timens = %v, want %v", err, got, tt.wantHint)
			}
		})
	}
}
