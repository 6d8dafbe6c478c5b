package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// One log format per destination, chosen once: a person at a terminal
// reads short lines ("14:02:03 INFO  checkpoint generation 3: ..."), a log
// file gets logfmt (time=... level=... msg=...) that tools parse, or JSON
// lines with --log-format json. Every line of a run has the same format,
// whichever part of the tool wrote it.

// logFormatFlag is --log-format.
var logFormatFlag = &cli.StringFlag{
	Name:    "log-format",
	EnvVars: []string{"CKPT_APPTAINER_LOG_FORMAT"},
	Usage:   "log as `FORMAT`: human (the default on a terminal), logfmt (the default elsewhere, such as a batch job's output file) or json",
}

// logFormatter returns the formatter for format ("" picks by whether out
// is a terminal).
func logFormatter(format string, out io.Writer) (logrus.Formatter, error) {
	if format == "" {
		format = "logfmt"
		if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "human"
		}
	}
	switch format {
	case "human":
		return humanFormatter{}, nil
	case "logfmt":
		return &logrus.TextFormatter{DisableColors: true, FullTimestamp: true}, nil
	case "json":
		return &logrus.JSONFormatter{}, nil
	}
	return nil, fmt.Errorf("--log-format %q: want human, logfmt or json", format)
}

// humanFormatter writes "15:04:05 LEVEL message key=value ...".
type humanFormatter struct{}

func (humanFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %-5s %s", e.Time.Format("15:04:05"), strings.ToUpper(levelName(e.Level)), e.Message)
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// levelName is the level's name, shortened to at most five letters.
func levelName(l logrus.Level) string {
	if l == logrus.WarnLevel {
		return "warn"
	}
	return l.String()
}
