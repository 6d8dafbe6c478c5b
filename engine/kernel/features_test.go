package kernel

import (
	"os"
	"strings"
	"testing"
)

func TestParseDisable(t *testing.T) {
	tests := []struct {
		value   string
		want    []Feature
		wantErr string
	}{
		{"", nil, ""},
		{"clone3", []Feature{Clone3}, ""},
		{" clone3 , pidfd-getfd ,", []Feature{Clone3, PidfdGetfd}, ""},
		{"bogus", nil, "unknown feature bogus"},
		{"clone3,bogus,worse", nil, "unknown feature bogus, worse"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := ParseDisable(tt.value)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "rhel8") {
					t.Fatalf("err = %v, want %q and the known names", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for _, f := range tt.want {
				if !got[f] {
					t.Errorf("%s not disabled", f)
				}
			}
		})
	}
}

// TestParseDisableRHEL8 checks the rhel8 set against what mainline 4.18
// lacks: every feature that came after it, nothing that came before.
func TestParseDisableRHEL8(t *testing.T) {
	got, err := ParseDisable("rhel8")
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range infos {
		after := versionLess([2]int{4, 18}, parseVersion(i.Since))
		if got[i.Name] != after {
			t.Errorf("%s (since %s): disabled by rhel8 = %v, want %v", i.Name, i.Since, got[i.Name], after)
		}
	}
}

func TestEveryFeatureHasAProbe(t *testing.T) {
	for _, i := range infos {
		if probes[i.Name] == nil {
			t.Errorf("%s has no probe", i.Name)
		}
		if i.What == "" || i.Since == "" || i.Without == "" {
			t.Errorf("%s lacks a description: %+v", i.Name, i)
		}
	}
	if len(probes) != len(infos) {
		t.Errorf("%d probes for %d features", len(probes), len(infos))
	}
}

// TestProbeMatchesRelease checks the probe against the running kernel's
// version: a mainline kernel at least as new as a feature has it. (Older
// kernels may have it too, backported; that is not checked.)
func TestProbeMatchesRelease(t *testing.T) {
	s := probeAll()
	t.Logf("kernel %s, cap_last_cap %d", s.Release, s.LastCap)
	for _, st := range s.Features {
		t.Logf("%-24s %-5v %s", st.Name, st.Available, st.Detail)
		if has, known := MainlineHas(st.Name, s.Release); known && has && !st.Available {
			t.Errorf("%s came in %s, the kernel is %s, yet the probe says no: %s", st.Name, Describe(st.Name).Since, s.Release, st.Detail)
		}
	}
	implies := [][2]Feature{
		{Clone3SetTID, Clone3}, {PidfdGetfd, PidfdOpen}, {SetnsPidfd, PidfdOpen},
		{TimeNamespaceVfork, TimeNamespace}, {UserfaultfdWPAsync, Userfaultfd},
	}
	for _, p := range implies {
		if s.Has(p[0]) && !s.Has(p[1]) {
			t.Errorf("%s without %s", p[0], p[1])
		}
	}
}

func TestDisableSwitchesFeaturesOff(t *testing.T) {
	raw := probeAll()
	if !raw.Has(Clone3) {
		t.Skip("no clone3 on this kernel to switch off")
	}
	off, err := ParseDisable("clone3,rhel8")
	if err != nil {
		t.Fatal(err)
	}
	s := raw.withDisabled(off)
	st := s.Status(Clone3)
	if st.Available || !st.Disabled {
		t.Errorf("clone3 after disabling: %+v", st)
	}
	if !strings.Contains(s.Why(Clone3), EnvDisable) {
		t.Errorf("Why = %q, want it to name %s", s.Why(Clone3), EnvDisable)
	}
	if raw.Has(NSLastPID) && !s.Has(NSLastPID) {
		t.Errorf("rhel8 switched off ns-last-pid, which 4.18 has")
	}
	if !raw.Has(Clone3) {
		t.Errorf("withDisabled changed the set it was called on")
	}
}

func TestFilterCaps(t *testing.T) {
	Adopt(&Set{LastCap: 37})
	t.Cleanup(func() { Adopt(nil) })
	got := FilterCaps([]uintptr{0, 21, 37, 38, 40})
	if len(got) != 3 || got[2] != 37 {
		t.Errorf("FilterCaps with cap_last_cap 37 = %v, want [0 21 37]", got)
	}
}

func TestExecMemfdRuns(t *testing.T) {
	f, err := ExecMemfd("ckpt-test", exitProgram())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := os.StartProcess(ProcPath(f), []string{"x"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait()
	if err != nil || st.ExitCode() != 0 {
		t.Errorf("exit program: %v, %v", st, err)
	}
}
