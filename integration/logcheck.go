package integration

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// lineParser turns one log line into the step number it records, or says why
// the line is malformed.
type lineParser func(line string) (int, error)

// checkSequence checks that data holds one complete line for every step from
// first to last, in order, each exactly once: a restore that loses output shows
// as a gap, one that replays output already written shows as a repeat.
func checkSequence(data []byte, first, last int, parse lineParser) error {
	if len(data) == 0 {
		return fmt.Errorf("log is empty, want steps %d to %d", first, last)
	}
	if data[len(data)-1] != '\n' {
		return fmt.Errorf("log ends with an unterminated line %q", lastLine(data))
	}
	lines := strings.Split(string(data[:len(data)-1]), "\n")
	want := first
	for i, line := range lines {
		step, err := parse(line)
		if err != nil {
			return fmt.Errorf("line %d %q: %w", i+1, line, err)
		}
		switch {
		case step < want:
			return fmt.Errorf("line %d: step %d repeated or out of order (want %d)", i+1, step, want)
		case step > want:
			return fmt.Errorf("line %d: step %d follows %d, steps %d to %d missing",
				i+1, step, want-1, want, step-1)
		case step > last:
			return fmt.Errorf("line %d: step %d is past the last step %d", i+1, step, last)
		}
		want++
	}
	if want <= last {
		return fmt.Errorf("log stops at step %d, want %d", want-1, last)
	}
	return nil
}

func lastLine(data []byte) string {
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		return string(data[i+1:])
	}
	return string(data)
}

// parseCounterLine parses a line of counter.c: just the number.
func parseCounterLine(line string) (int, error) {
	return strconv.Atoi(line)
}

// parseSumLine parses a line of counter.py: "I S" where S must be 1+...+I.
func parseSumLine(line string) (int, error) {
	i, s, err := twoInts(line)
	if err != nil {
		return 0, err
	}
	if s != i*(i+1)/2 {
		return 0, fmt.Errorf("sum %d, want %d", s, i*(i+1)/2)
	}
	return i, nil
}

// goWorkers is the number of workers in testdata/gotimers.
const goWorkers = 4

// parseGoLine parses a line of gotimers: "STEP TOTAL" with TOTAL = 4*STEP.
func parseGoLine(line string) (int, error) {
	step, total, err := twoInts(line)
	if err != nil {
		return 0, err
	}
	if total != goWorkers*step {
		return 0, fmt.Errorf("total %d, want %d", total, goWorkers*step)
	}
	return step, nil
}

func twoInts(line string) (int, int, error) {
	f := strings.Split(line, " ")
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("want two numbers")
	}
	a, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, 0, err
	}
	b, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, err
	}
	return a, b, nil
}

var memLine = regexp.MustCompile(`^step ([0-9]+) checksum [0-9a-f]{16}$`)

// parseMemLine parses a line of mem.c: "step K checksum X".
func parseMemLine(line string) (int, error) {
	m := memLine.FindStringSubmatch(line)
	if m == nil {
		return 0, fmt.Errorf("want \"step K checksum X\"")
	}
	return strconv.Atoi(m[1])
}

var tickLine = regexp.MustCompile(`^(tick|done) ([0-9]+) iterations ([0-9]+)$`)

// avxTicksPerSecond matches TICK_NS in testdata/avx.c.
const avxTicksPerSecond = 10

// checkAVXLog checks the log of avx.c run for seconds: ticks 1..N in order,
// the verified iteration count never going back, and the final "done" line.
func checkAVXLog(data []byte, seconds int) error {
	ticks := seconds * avxTicksPerSecond
	body := data
	if len(body) > 0 && body[len(body)-1] == '\n' {
		body = body[:len(body)-1]
	}
	i := bytes.LastIndexByte(body, '\n')
	if i < 0 {
		return fmt.Errorf("log has no tick lines before its last line %q", body)
	}
	done := tickLine.FindStringSubmatch(string(body[i+1:]))
	if done == nil || done[1] != "done" || done[2] != strconv.Itoa(ticks) {
		return fmt.Errorf("last line %q, want \"done %d iterations X\"", body[i+1:], ticks)
	}
	last := int64(-1)
	err := checkSequence(data[:i+1], 1, ticks, func(line string) (int, error) {
		m := tickLine.FindStringSubmatch(line)
		if m == nil || m[1] != "tick" {
			return 0, fmt.Errorf("want \"tick K iterations X\"")
		}
		n, err := strconv.ParseInt(m[3], 10, 64)
		if err != nil {
			return 0, err
		}
		if n < last {
			return 0, fmt.Errorf("iterations went back from %d to %d", last, n)
		}
		last = n
		return strconv.Atoi(m[2])
	})
	if err != nil {
		return err
	}
	if n, _ := strconv.ParseInt(done[3], 10, 64); n < last {
		return fmt.Errorf("done line counts %d iterations, the last tick %d", n, last)
	}
	return nil
}
