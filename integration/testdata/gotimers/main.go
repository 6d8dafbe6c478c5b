// Command gotimers exercises the parts of the Go runtime a restore must keep
// working: goroutines on several OS threads, a time.Ticker, channels, a
// sync.WaitGroup and the runtime's own signal handling. Every tick it hands one
// job to each worker over a channel, collects the results, and checks that the
// per-worker counters add up to the total; it appends "STEP TOTAL" to LOG and
// exits 0 after N steps, 1 on any inconsistency. SIGUSR2 bumps one worker's
// counter behind the total's back, to prove the check can fail.
//
// usage: gotimers LOG N
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const workers = 4

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gotimers LOG N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "gotimers: bad N: %v\n", err)
		os.Exit(2)
	}
	log, err := os.OpenFile(os.Args[1], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gotimers: %v\n", err)
		os.Exit(2)
	}
	if err := run(log, n); err != nil {
		fmt.Fprintf(os.Stderr, "gotimers: %v\n", err)
		os.Exit(1)
	}
	if err := log.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "gotimers: %v\n", err)
		os.Exit(2)
	}
}

func run(log *os.File, n int) error {
	var counts [workers]atomic.Int64
	jobs := make(chan int)
	results := make(chan int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				counts[w].Add(1)
				results <- j
			}
		}()
	}

	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	go func() {
		for range usr2 {
			counts[0].Add(1)
		}
	}()

	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	total := int64(0)
	for step := 1; step <= n; step++ {
		<-ticker.C
		// Each worker takes one job at a time, so all of them may be busy.
		go func() {
			for range workers {
				jobs <- step
			}
		}()
		for range workers {
			if j := <-results; j != step {
				return fmt.Errorf("step %d: got a result of step %d", step, j)
			}
			total++
		}
		var sum int64
		for w := range workers {
			sum += counts[w].Load()
		}
		if sum != total || total != int64(step*workers) {
			return fmt.Errorf("step %d: workers counted %d jobs, total is %d, want %d",
				step, sum, total, step*workers)
		}
		if _, err := fmt.Fprintf(log, "%d %d\n", step, total); err != nil {
			return fmt.Errorf("write log: %w", err)
		}
	}
	close(jobs)
	wg.Wait()
	return nil
}
