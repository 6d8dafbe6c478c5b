package supervisor

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/term"
)

const (
	// progressQuiet is how long an operation runs before its progress is
	// shown: short checkpoints stay at their one summary line.
	progressQuiet = time.Second
	// progressEvery is the interval of progress lines in a log file.
	progressEvery = 2 * time.Second
	// progressRedraw is the interval of redraws of the bar on a terminal.
	progressRedraw = 100 * time.Millisecond
	// progressBarMax is the widest bar drawn, in columns.
	progressBarMax = 30
)

// progressReporter shows how far a long checkpoint or restore has come.
// Nothing is shown during the first second; after that, on a terminal, a
// one-line bar is redrawn in place about ten times a second, and anywhere
// else a progress line is logged every two seconds. The figures come from
// the engine (update) and are shown from a ticker goroutine of the
// reporter's own, so they advance while the engine is busy elsewhere (an
// fsync) and the engine never waits for the terminal.
//
// The operation's summary is not the reporter's: the caller logs it after
// end, with rateSuffix.
type progressReporter struct {
	op  string // "checkpoint generation 7"
	log logrus.FieldLogger
	out io.Writer
	// bar draws a bar on out, a terminal, instead of logging lines;
	// width is the terminal's width in columns.
	bar   bool
	width int
	start time.Time

	done, total atomic.Int64

	// mu protects below, and serialises the writes of the bar to out.
	mu sync.Mutex
	// shown says the bar is on the screen; held skips the next redraw,
	// so that a log line about to be written is not drawn over.
	shown, held bool
	lastLine    time.Time // of the last progress line logged
	// logger is the logger whose hooks clear the bar before a log line;
	// nil when the bar is not drawn or the logger is not a *logrus.Logger.
	logger *logrus.Logger

	stop, stopped chan struct{}
}

// newProgressReporter starts reporting the progress of op to log, or as a
// bar on out when out is a terminal. end stops it.
func newProgressReporter(op string, log logrus.FieldLogger, out *os.File) *progressReporter {
	p := newProgressAt(op, log, out, isTerminal(out), time.Now())
	if p.bar {
		p.width = termWidth(out)
		p.hookLogger()
	}
	p.stop, p.stopped = make(chan struct{}), make(chan struct{})
	go p.run()
	return p
}

// newProgressAt makes a reporter without its ticker, started at start;
// bar forces the terminal display or the log lines.
func newProgressAt(op string, log logrus.FieldLogger, out io.Writer, bar bool, start time.Time) *progressReporter {
	return &progressReporter{op: op, log: log, out: out, bar: bar, width: 80, start: start}
}

// update takes the engine's figures: done bytes of total (0: unknown). It
// may be called from any goroutine and only stores them.
func (p *progressReporter) update(done, total int64) {
	p.done.Store(done)
	p.total.Store(total)
}

// run shows the progress at every tick until end.
func (p *progressReporter) run() {
	defer close(p.stopped)
	t := time.NewTicker(progressRedraw)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.step(now)
		}
	}
}

// step shows the progress as it is at now: redraws the bar, or logs a line
// if the last one is progressEvery old.
func (p *progressReporter) step(now time.Time) {
	elapsed := now.Sub(p.start)
	if elapsed < progressQuiet {
		return
	}
	done, total := p.done.Load(), p.total.Load()
	p.mu.Lock()
	if p.bar {
		defer p.mu.Unlock()
		if p.held {
			p.held = false
			return
		}
		fmt.Fprintf(p.out, "\r%s\x1b[K", p.barLine(done, total, elapsed))
		p.shown = true
		return
	}
	if !p.lastLine.IsZero() && now.Sub(p.lastLine) < progressEvery {
		p.mu.Unlock()
		return
	}
	p.lastLine = now
	p.mu.Unlock()
	p.log.Infof("%s: %s", p.op, progressText(done, total, elapsed))
}

// end stops the reporter and clears the bar. The caller logs the summary.
func (p *progressReporter) end() {
	if p.stop != nil {
		close(p.stop)
		<-p.stopped
	}
	p.unhookLogger()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
}

// jobResumed is called as the job is let run again while the checkpoint
// goes on writing: the job may write to the same terminal, so the bar is
// wiped now and the rest of the progress is logged as whole lines.
func (p *progressReporter) jobResumed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	if p.bar {
		p.bar = false
		p.lastLine = time.Now()
	}
}

// clearLocked wipes the bar off its line, leaving the cursor at the start.
// Precondition: p.mu is held.
func (p *progressReporter) clearLocked() {
	if p.shown {
		io.WriteString(p.out, "\r\x1b[K")
		p.shown = false
	}
}

// barLine renders the bar: the operation, a bar and percentage when the
// total is known, bytes, rate and time, fitted to the terminal's width.
func (p *progressReporter) barLine(done, total int64, elapsed time.Duration) string {
	figures := HumanBytes(done)
	if total > 0 {
		figures = fmt.Sprintf("%3d%% %s of %s", percent(done, total), HumanBytes(done), HumanBytes(total))
	}
	figures += fmt.Sprintf(", %s, %.1fs", rate(done, elapsed), elapsed.Seconds())
	line := p.op + " " + figures
	if total > 0 {
		// " [" and "] " around the bar, and one column left free so the
		// cursor never wraps.
		if w := min(progressBarMax, p.width-1-len(p.op)-4-len(figures)); w >= 8 {
			fill := int(int64(w) * min(done, total) / total)
			bar := strings.Repeat("=", fill)
			if fill < w {
				bar += ">" + strings.Repeat(" ", w-fill-1)
			}
			line = p.op + " [" + bar + "] " + figures
		}
	}
	if len(line) >= p.width {
		line = line[:max(0, p.width-1)]
	}
	return line
}

// progressText is the progress in a log line: "1.20 GiB of 4.00 GiB
// (30%), 850 MiB/s".
func progressText(done, total int64, elapsed time.Duration) string {
	if total <= 0 {
		return fmt.Sprintf("%s, %s", HumanBytes(done), rate(done, elapsed))
	}
	return fmt.Sprintf("%s of %s (%d%%), %s", HumanBytes(done), HumanBytes(total), percent(done, total), rate(done, elapsed))
}

// rateSuffix is what the summary line of an operation of n bytes that
// took d adds: its rate, for one that took long enough to be followed.
func rateSuffix(n int64, d time.Duration) string {
	if d < progressQuiet || n <= 0 {
		return ""
	}
	return ", " + rate(n, d)
}

func percent(done, total int64) int {
	return int(min(done, total) * 100 / total)
}

// rate renders n bytes in d in the binary units sizes are shown in:
// MiB/s, or GiB/s from 1 GiB/s up.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "- MiB/s"
	}
	r := float64(n) / d.Seconds()
	if r >= 1<<30 {
		return fmt.Sprintf("%.1f GiB/s", r/(1<<30))
	}
	return fmt.Sprintf("%.0f MiB/s", r/(1<<20))
}

// hookLogger makes the logger clear the bar before each line it writes.
func (p *progressReporter) hookLogger() {
	switch l := p.log.(type) {
	case *logrus.Logger:
		p.logger = l
	case *logrus.Entry:
		p.logger = l.Logger
	}
	if p.logger != nil {
		p.logger.AddHook(barClearer{p})
	}
}

// unhookLogger takes the reporter's hook off the logger again.
func (p *progressReporter) unhookLogger() {
	if p.logger == nil {
		return
	}
	hooks := p.logger.ReplaceHooks(make(logrus.LevelHooks))
	kept := make(logrus.LevelHooks)
	for level, hs := range hooks {
		for _, h := range hs {
			if c, ok := h.(barClearer); !ok || c.p != p {
				kept[level] = append(kept[level], h)
			}
		}
	}
	p.logger.ReplaceHooks(kept)
	p.logger = nil
}

// barClearer is a logrus hook that clears the bar before a line is logged
// and holds back the next redraw, which would otherwise land on the line
// before its text.
type barClearer struct{ p *progressReporter }

func (barClearer) Levels() []logrus.Level { return logrus.AllLevels }

func (c barClearer) Fire(*logrus.Entry) error {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.clearLocked()
	c.p.held = true
	return nil
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// termWidth is the width of the terminal f in columns, 80 if unknown.
func termWidth(f *os.File) int {
	w, _, err := term.GetSize(int(f.Fd()))
	if err != nil || w <= 0 {
		return 80
	}
	return w
}

// ClientProgress shows, as a bar on f when f is a terminal, the progress
// of a checkpoint a supervisor takes for this client: update takes the
// figures as they come, end wipes the bar. Elsewhere update is nil (no
// figures are asked for) and end does nothing.
func ClientProgress(f *os.File) (update func(op string, done, total int64), end func()) {
	if !isTerminal(f) {
		return nil, func() {}
	}
	p := newProgressReporter("checkpoint", logrus.StandardLogger(), f)
	return func(_ string, done, total int64) { p.update(done, total) }, p.end
}
