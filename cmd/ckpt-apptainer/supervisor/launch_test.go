package supervisor

import (
	"reflect"
	"testing"
)

func TestWithRseqOff(t *testing.T) {
	tests := []struct {
		name      string
		env       []string
		container bool
		want      []string
	}{
		{"none yet", []string{"A=1"}, false, []string{"A=1", "GLIBC_TUNABLES=glibc.pthread.rseq=0"}},
		{"added to the user's", []string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2"}, false,
			[]string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.pthread.rseq=0"}},
		{"empty value", []string{"GLIBC_TUNABLES="}, false, []string{"GLIBC_TUNABLES=glibc.pthread.rseq=0"}},
		{"the user's choice kept", []string{"GLIBC_TUNABLES=glibc.pthread.rseq=1"}, false, []string{"GLIBC_TUNABLES=glibc.pthread.rseq=1"}},
		{"container", nil, true, []string{"GLIBC_TUNABLES=glibc.pthread.rseq=0", "APPTAINERENV_GLIBC_TUNABLES=glibc.pthread.rseq=0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]string(nil), tt.env...)
			got := withRseqOff(in, tt.container)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("withRseqOff(%q) = %q, want %q", tt.env, got, tt.want)
			}
			if !reflect.DeepEqual(in, tt.env) {
				t.Errorf("the caller's slice was changed: %q", in)
			}
		})
	}
}
