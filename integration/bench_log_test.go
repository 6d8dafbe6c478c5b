package integration

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// benchPoll is how often the benchmark looks at the job's log: a small part
// of the 100 ms between the job's ticks.
const benchPoll = 2 * time.Millisecond

// benchTick is the number of the last complete "tick N NS" line in the log
// and the log's size; 0 ticks for an empty log.
func benchTick(path string) (tick int, size int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return 0, 0, err
	}
	size = int64(len(b))
	b = b[:bytes.LastIndexByte(b, '\n')+1]
	if len(b) == 0 {
		return 0, size, nil
	}
	line := string(b[bytes.LastIndexByte(b[:len(b)-1], '\n')+1 : len(b)-1])
	tick, err = benchParseTick(line)
	return tick, size, err
}

// benchParseTick parses one "tick N NS" line.
func benchParseTick(line string) (int, error) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "tick" {
		return 0, fmt.Errorf("log line %q is not \"tick N NS\"", line)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("log line %q: %w", line, err)
	}
	if _, err := strconv.ParseInt(f[2], 10, 64); err != nil {
		return 0, fmt.Errorf("log line %q: %w", line, err)
	}
	return n, nil
}

// benchWaitTick waits until the log's last tick is at least n, failing
// early when alive says the job is gone.
func benchWaitTick(path string, n int, timeout time.Duration, alive func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		got, _, err := benchTick(path)
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if !alive() {
			return fmt.Errorf("job ended at tick %d, before tick %d", got, n)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("log %s at tick %d after %v, waiting for tick %d", path, got, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchWaitGrowth waits until the log grows past size with a complete line
// and returns when it saw it and that line.
func benchWaitGrowth(path string, size int64, timeout time.Duration, alive func() bool) (time.Time, string, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := os.Stat(path)
		if err != nil {
			return time.Time{}, "", err
		}
		if st.Size() > size {
			seen := time.Now()
			b, err := os.ReadFile(path)
			if err != nil {
				return time.Time{}, "", err
			}
			if i := bytes.IndexByte(b[size:], '\n'); i >= 0 {
				return seen, string(b[size : size+int64(i)]), nil
			}
		}
		if !alive() {
			return time.Time{}, "", fmt.Errorf("restored job ended before writing to %s", path)
		}
		if time.Now().After(deadline) {
			return time.Time{}, "", fmt.Errorf("no new line in %s within %v of the restart", path, timeout)
		}
		time.Sleep(benchPoll)
	}
}
