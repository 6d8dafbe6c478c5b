package abi

import "testing"

func TestTimeLeft(t *testing.T) {
	tests := []struct {
		name                   string
		sec, nsec, isec, insec int64
		wantSec, wantNsec      int64
		wantArmed              bool
	}{
		{"disarmed", 0, 0, 0, 0, 0, 0, false},
		{"one-shot", 2, 5, 0, 0, 2, 5, true},
		{"periodic", 0, 300, 0, 50e6, 0, 300, true},
		{"periodic read as it expired", 0, 0, 0, 50e6, 0, 1, true},
	}
	for _, tt := range tests {
		sec, nsec, armed := TimeLeft(tt.sec, tt.nsec, tt.isec, tt.insec)
		if sec != tt.wantSec || nsec != tt.wantNsec || armed != tt.wantArmed {
			t.Errorf("%s: got %d s %d ns armed %v, want %d s %d ns armed %v", tt.name, sec, nsec, armed, tt.wantSec, tt.wantNsec, tt.wantArmed)
		}
	}
}
