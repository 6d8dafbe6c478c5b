package integration

import (
	"fmt"
	"strings"
	"testing"
)

func counterLog(steps ...int) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "%d\n", s)
	}
	return b.String()
}

func TestCheckSequence(t *testing.T) {
	tests := []struct {
		name    string
		log     string
		wantErr string // empty: the log is good
	}{
		{"complete", counterLog(1, 2, 3, 4, 5), ""},
		{"empty", "", "empty"},
		{"gap", counterLog(1, 2, 4, 5), "steps 3 to 3 missing"},
		{"repeat after restore", counterLog(1, 2, 3, 2, 3, 4, 5), "step 2 repeated"},
		{"duplicate line", counterLog(1, 2, 2, 3, 4, 5), "step 2 repeated"},
		{"out of order", counterLog(1, 3, 2, 4, 5), "steps 2 to 2 missing"},
		{"stops early", counterLog(1, 2, 3), "stops at step 3, want 5"},
		{"runs past the end", counterLog(1, 2, 3, 4, 5, 6), "past the last step"},
		{"starts late", counterLog(2, 3, 4, 5), "steps 1 to 1 missing"},
		{"torn last line", "1\n2\n3\n4\n5", "unterminated"},
		{"torn line in the middle", "1\n2\n3\n34\n5\n", "steps 4 to 33 missing"},
		{"garbage", "1\n2\nx\n4\n5\n", "line 3"},
		{"zero bytes from a hole", "1\n2\n\x00\x00\n4\n5\n", "line 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSequence([]byte(tt.log), 1, 5, parseCounterLine)
			checkErr(t, err, tt.wantErr)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("good log rejected: %v", err)
	case want != "" && err == nil:
		t.Fatalf("bad log accepted, want an error containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestLineParsers(t *testing.T) {
	tests := []struct {
		name    string
		parse   lineParser
		line    string
		want    int
		wantErr string
	}{
		{"counter", parseCounterLine, "42", 42, ""},
		{"counter with space", parseCounterLine, "42 ", 0, "invalid syntax"},
		{"sum", parseSumLine, "4 10", 4, ""},
		{"wrong sum", parseSumLine, "4 11", 0, "sum 11, want 10"},
		{"sum one field", parseSumLine, "4", 0, "two numbers"},
		{"go", parseGoLine, "3 12", 3, ""},
		{"go wrong total", parseGoLine, "3 13", 0, "total 13, want 12"},
		{"mem", parseMemLine, "step 7 checksum 0123456789abcdef", 7, ""},
		{"mem short checksum", parseMemLine, "step 7 checksum 0123", 0, "step K checksum X"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.line)
			checkErr(t, err, tt.wantErr)
			if err == nil && got != tt.want {
				t.Fatalf("step %d, want %d", got, tt.want)
			}
		})
	}
}

func avxLog(ticks []int, iters []int, done string) string {
	var b strings.Builder
	for i, k := range ticks {
		fmt.Fprintf(&b, "tick %d iterations %d\n", k, iters[i])
	}
	b.WriteString(done)
	return b.String()
}

func TestCheckAVXLog(t *testing.T) {
	// One second is ten ticks.
	ten := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	rising := []int{5, 10, 15, 20, 25, 30, 35, 40, 45, 50}
	tests := []struct {
		name    string
		log     string
		wantErr string
	}{
		{"complete", avxLog(ten, rising, "done 10 iterations 55\n"), ""},
		{"no done line", avxLog(ten, rising, ""), "want \"done 10"},
		{"done too early", avxLog(ten[:9], rising[:9], "done 10 iterations 55\n"), "stops at step 9"},
		{"repeated tick", avxLog([]int{1, 2, 3, 4, 3, 4, 5, 6, 7, 8, 9, 10},
			[]int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, "done 10 iterations 55\n"), "step 3 repeated"},
		{"iterations go back", avxLog(ten, []int{5, 10, 15, 20, 2, 30, 35, 40, 45, 50},
			"done 10 iterations 55\n"), "went back"},
		{"done counts less", avxLog(ten, rising, "done 10 iterations 1\n"), "done line counts"},
		{"empty", "", "no tick lines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, checkAVXLog([]byte(tt.log), 1), tt.wantErr)
		})
	}
}
