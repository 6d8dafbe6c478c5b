package supervisor

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// progressStep is the engine's figures at a moment of an operation.
type progressStep struct {
	at          time.Duration
	done, total int64
}

func TestProgressReporter(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name  string
		bar   bool
		steps []progressStep
		// out and log must contain every string of theirs, in order;
		// lines is the number of progress lines logged.
		out, log []string
		lines    int
	}{
		{
			name:  "under a second, nothing",
			steps: []progressStep{{100 * time.Millisecond, 10 * mib, 100 * mib}, {900 * time.Millisecond, 90 * mib, 100 * mib}},
		},
		{
			name:  "under a second on a terminal, nothing",
			bar:   true,
			steps: []progressStep{{500 * time.Millisecond, 10 * mib, 100 * mib}, {999 * time.Millisecond, 90 * mib, 100 * mib}},
		},
		{
			name: "log lines every two seconds",
			steps: []progressStep{
				{500 * time.Millisecond, 100 * mib, 2000 * mib},
				{1000 * time.Millisecond, 600 * mib, 2000 * mib},
				{2000 * time.Millisecond, 1200 * mib, 2000 * mib},
				{3000 * time.Millisecond, 1500 * mib, 2000 * mib},
				{4000 * time.Millisecond, 2000 * mib, 2000 * mib},
			},
			log: []string{
				"checkpoint generation 7: 600.0 MiB of 1.95 GiB (30%), 600 MiB/s",
				"checkpoint generation 7: 1.46 GiB of 1.95 GiB (75%), 500 MiB/s",
			},
			lines: 2,
		},
		{
			name:  "unknown total",
			steps: []progressStep{{1500 * time.Millisecond, 300 * mib, 0}},
			log:   []string{"checkpoint generation 7: 300.0 MiB, 200 MiB/s"},
			lines: 1,
		},
		{
			name: "bar on a terminal",
			bar:  true,
			steps: []progressStep{
				{1000 * time.Millisecond, 500 * mib, 1000 * mib},
				{1100 * time.Millisecond, 1000 * mib, 1000 * mib},
			},
			out: []string{
				"\rcheckpoint generation 7 [===============>              ]  50% 500.0 MiB of 1000.0 MiB, 500 MiB/s, 1.0s\x1b[K",
				"\rcheckpoint generation 7 [==============================] 100% 1000.0 MiB of 1000.0 MiB, 909 MiB/s, 1.1s\x1b[K",
				"\r\x1b[K",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, logged bytes.Buffer
			log := logrus.New()
			log.SetOutput(&logged)
			log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableQuote: true})
			start := time.Now()
			p := newProgressAt("checkpoint generation 7", log, &out, tt.bar, start)
			p.width = 120
			for _, s := range tt.steps {
				p.update(s.done, s.total)
				p.step(start.Add(s.at))
			}
			p.end()
			if got := strings.Count(logged.String(), "\n"); got != tt.lines {
				t.Errorf("%d lines logged, want %d:\n%s", got, tt.lines, logged.String())
			}
			wantInOrder(t, "log", logged.String(), tt.log)
			wantInOrder(t, "output", out.String(), tt.out)
			if len(tt.out) == 0 && out.Len() != 0 {
				t.Errorf("output %q, want none", out.String())
			}
			if tt.bar && out.Len() > 0 && !strings.HasSuffix(out.String(), "\r\x1b[K") {
				t.Errorf("output %q: the bar is not cleared at the end", out.String())
			}
		})
	}
}

// wantInOrder checks that s holds each of want, one after the other.
func wantInOrder(t *testing.T, what, s string, want []string) {
	t.Helper()
	rest := s
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("%s %q: no %q (in order)", what, s, w)
			return
		}
		rest = rest[i+len(w):]
	}
}

// TestProgressBarClearedForLogLines checks that a line logged while the
// bar is shown starts on a clean line, and that the next redraw waits for
// it.
func TestProgressBarClearedForLogLines(t *testing.T) {
	var out bytes.Buffer
	log := logrus.New()
	log.SetOutput(&out)
	log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableQuote: true})
	start := time.Now()
	p := newProgressAt("restore generation 3", log, &out, true, start)
	p.hookLogger()
	p.update(10<<20, 100<<20)
	p.step(start.Add(1200 * time.Millisecond))
	log.Info("pid 7: rolling a file back")
	p.step(start.Add(1300 * time.Millisecond)) // held back
	if got := out.String(); !strings.HasSuffix(got, "\r\x1b[Klevel=info msg=pid 7: rolling a file back\n") {
		t.Fatalf("output %q: the bar is not cleared before the log line, or drawn after it too soon", got)
	}
	p.step(start.Add(1400 * time.Millisecond))
	p.end()
	log.Info("restored")
	wantInOrder(t, "output", out.String(), []string{"rolling a file back\n", "\rrestore generation 3 [", "10%", "\r\x1b[K", "level=info msg=restored\n"})
	if strings.Count(out.String(), "\r\x1b[K") != 2 {
		t.Errorf("output %q: after end the reporter still clears lines", out.String())
	}
	if n := len(log.Hooks[logrus.InfoLevel]); n != 0 {
		t.Errorf("%d hooks left on the logger after end", n)
	}
}

func TestProgressBarFitsTheTerminal(t *testing.T) {
	p := newProgressAt("checkpoint generation 12", logrus.New(), &bytes.Buffer{}, true, time.Now())
	for _, width := range []int{200, 80, 60, 30} {
		p.width = width
		line := p.barLine(3<<30, 4<<30, 3*time.Second)
		if len(line) >= width {
			t.Errorf("width %d: line %q is %d columns", width, line, len(line))
		}
		if width >= 80 && !strings.Contains(line, "[") {
			t.Errorf("width %d: line %q has no bar", width, line)
		}
	}
}

func TestRateSuffix(t *testing.T) {
	tests := []struct {
		n    int64
		d    time.Duration
		want string
	}{
		{1 << 30, 500 * time.Millisecond, ""},
		{0, 3 * time.Second, ""},
		{1500 << 20, 2 * time.Second, ", 750 MiB/s"},
		{4 << 30, 2 * time.Second, ", 2.0 GiB/s"},
	}
	for _, tt := range tests {
		if got := rateSuffix(tt.n, tt.d); got != tt.want {
			t.Errorf("rateSuffix(%d, %v) = %q, want %q", tt.n, tt.d, got, tt.want)
		}
	}
}

// TestProgressReporterQuick runs the reporter with its ticker for an
// operation that ends at once: it shows nothing and stops.
func TestProgressReporterQuick(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var logged bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logged)
	p := newProgressReporter("checkpoint generation 1", log, w)
	if p.bar {
		t.Fatal("a pipe taken for a terminal")
	}
	p.update(1<<20, 2<<20)
	time.Sleep(3 * progressRedraw)
	p.end()
	if logged.Len() != 0 {
		t.Fatalf("logged %q for an operation of %v", logged.String(), 3*progressRedraw)
	}
}

// TestProgressBarGoneWhenJobResumes: once the job runs again (and may
// write to the same terminal), the bar is wiped and never drawn again; the
// rest of the progress comes as whole log lines.
func TestProgressBarGoneWhenJobResumes(t *testing.T) {
	var out, logged bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logged)
	start := time.Now()
	p := newProgressAt("checkpoint generation 7", log, &out, true, start)
	p.width = 120
	p.update(100<<20, 1000<<20)
	p.step(start.Add(1100 * time.Millisecond))
	if !strings.Contains(out.String(), "[===") {
		t.Fatalf("no bar drawn before the job resumed: %q", out.String())
	}
	p.jobResumed()
	drawn := out.Len()
	if !strings.HasSuffix(out.String(), "\r\x1b[K") {
		t.Errorf("the bar was not wiped as the job resumed: %q", out.String())
	}
	p.update(900<<20, 1000<<20)
	p.step(start.Add(1200 * time.Millisecond))
	p.step(start.Add(4 * time.Second))
	p.end()
	if out.Len() != drawn {
		t.Errorf("drawn on the terminal after the job resumed: %q", out.String()[drawn:])
	}
	if !strings.Contains(logged.String(), "900.0 MiB of 1000.0 MiB (90%)") {
		t.Errorf("progress after the job resumed was not logged as a line:\n%s", logged.String())
	}
}

// TestProgressToClient: a client that asked for progress gets the running
// checkpoint's figures as they change, then the result; one that did not
// ask gets the result alone.
func TestProgressToClient(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	st := &jobState{}
	pr := newProgressAt("checkpoint generation 3", logrus.New(), io.Discard, false, time.Now())
	pr.update(10<<20, 100<<20)
	st.setProgress(pr)
	go func() {
		defer server.Close()
		enc := json.NewEncoder(server)
		stop, stopped := make(chan struct{}), make(chan struct{})
		go sendProgress(enc, st, stop, stopped)
		time.Sleep(3 * progressSendEvery)
		pr.update(90<<20, 100<<20)
		time.Sleep(2 * progressSendEvery)
		close(stop)
		<-stopped
		enc.Encode(CheckpointResult{Generation: 3, Bytes: 100 << 20})
	}()
	var seen []int64
	res, err := readAnswer(json.NewDecoder(client), func(op string, done, total int64) {
		if op != "checkpoint generation 3" || total != 100<<20 {
			t.Errorf("progress %q %d of %d", op, done, total)
		}
		seen = append(seen, done)
	})
	if err != nil || res.Generation != 3 || res.Bytes != 100<<20 {
		t.Fatalf("result %+v, %v; want generation 3", res, err)
	}
	if len(seen) < 2 || seen[0] != 10<<20 || seen[len(seen)-1] != 90<<20 {
		t.Errorf("progress seen %v, want 10 MiB first and 90 MiB last", seen)
	}

	// No progress asked for: the result decodes alone.
	res, err = readAnswer(json.NewDecoder(strings.NewReader(`{"generation":4}`)), nil)
	if err != nil || res.Generation != 4 {
		t.Errorf("plain answer: %+v, %v", res, err)
	}
}
