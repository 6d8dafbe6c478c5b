package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// TestLogFormats: each format writes a whole line of its kind; a file (not
// a terminal) gets logfmt by default; an unknown format is refused.
func TestLogFormats(t *testing.T) {
	at := time.Date(2026, 12, 5, 14, 2, 3, 0, time.UTC)
	for _, c := range []struct {
		format string
		check  func(line string) bool
	}{
		{"human", func(l string) bool { return l == "14:02:03 WARN  checkpoint failed gen=3\n" }},
		{"logfmt", func(l string) bool {
			return strings.Contains(l, `level=warning msg="checkpoint failed" gen=3`) && strings.HasPrefix(l, "time=") && !strings.Contains(l, "\x1b[")
		}},
		{"", func(l string) bool { return strings.HasPrefix(l, "time=") }}, // a buffer is not a terminal
		{"json", func(l string) bool {
			var m map[string]any
			return json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "checkpoint failed" && m["gen"] == float64(3)
		}},
	} {
		var out bytes.Buffer
		f, err := logFormatter(c.format, &out)
		if err != nil {
			t.Fatalf("%q: %v", c.format, err)
		}
		log := logrus.New()
		log.SetOutput(&out)
		log.SetFormatter(f)
		log.WithTime(at).WithField("gen", 3).Warn("checkpoint failed")
		if !c.check(out.String()) {
			t.Errorf("format %q wrote %q", c.format, out.String())
		}
	}
	if _, err := logFormatter("xml", nil); err == nil || !strings.Contains(err.Error(), "want human, logfmt or json") {
		t.Errorf("--log-format xml: %v", err)
	}
}
