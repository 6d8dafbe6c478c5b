package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
)

func TestParseDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"90", 90 * time.Second, ""},
		{" 600 ", 10 * time.Minute, ""},
		{"0", 0, ""},
		{"5m", 5 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1.5s", 1500 * time.Millisecond, ""},
		{"", 0, "empty duration"},
		{"5x", 0, `"5x" is not a duration`},
		{"ten", 0, "give seconds (90) or a duration"},
		{"99999999999999999", 0, "too long"},
	} {
		got, err := parseDuration(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("parseDuration(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("parseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// TestJobFlags parses launch's flags as the command line does: times in
// seconds or as durations wherever a time is taken, DMTCP's interval
// variable, and global flags after the command.
func TestJobFlags(t *testing.T) {
	defer logrus.SetLevel(logrus.GetLevel())
	for _, c := range []struct {
		name  string
		args  []string
		env   map[string]string
		check func(o supervisor.Options) bool
		err   string
	}{
		{"interval in seconds", []string{"-i", "90"}, nil, func(o supervisor.Options) bool { return o.Interval == 90*time.Second }, ""},
		{"interval as a duration", []string{"-i", "5m"}, nil, func(o supervisor.Options) bool { return o.Interval == 5*time.Minute }, ""},
		{"long interval flag", []string{"--interval", "1h"}, nil, func(o supervisor.Options) bool { return o.Interval == time.Hour }, ""},
		{"no interval", nil, nil, func(o supervisor.Options) bool { return o.Interval == 0 }, ""},
		{"DMTCP's interval", nil, map[string]string{"DMTCP_CHECKPOINT_INTERVAL": "120"}, func(o supervisor.Options) bool { return o.Interval == 2*time.Minute }, ""},
		{"ours over DMTCP's", nil, map[string]string{"DMTCP_CHECKPOINT_INTERVAL": "120", "CKPT_APPTAINER_INTERVAL": "30s"}, func(o supervisor.Options) bool { return o.Interval == 30*time.Second }, ""},
		{"flag over the environment", []string{"-i", "7"}, map[string]string{"DMTCP_CHECKPOINT_INTERVAL": "120"}, func(o supervisor.Options) bool { return o.Interval == 7*time.Second }, ""},
		{"GPU lock timeout in seconds", []string{"--gpu-lock-timeout", "45"}, nil, func(o supervisor.Options) bool { return o.GPULockTimeout == 45*time.Second }, ""},
		{"debug after the command", []string{"--debug"}, nil, func(supervisor.Options) bool { return logrus.IsLevelEnabled(logrus.DebugLevel) }, ""},
		{"defaults are not explicit", nil, nil, func(o supervisor.Options) bool { return len(o.Explicit) == 0 }, ""},
		{"flags given are explicit", []string{"--keep", "2", "-i", "5"}, nil, func(o supervisor.Options) bool {
			return o.Explicit["keep"] && o.Explicit["interval"] && !o.Explicit["signal"]
		}, ""},
		{"the environment is explicit", nil, map[string]string{"DMTCP_CHECKPOINT_INTERVAL": "120"}, func(o supervisor.Options) bool { return o.Explicit["interval"] }, ""},
		{"bad interval", []string{"-i", "5x"}, nil, nil, `"5x" is not a duration`},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, k := range []string{"DMTCP_CHECKPOINT_INTERVAL", "CKPT_APPTAINER_INTERVAL"} {
				t.Setenv(k, c.env[k]) // restored after the test
				if _, ok := c.env[k]; !ok {
					os.Unsetenv(k)
				}
			}
			logrus.SetLevel(logrus.InfoLevel)
			var got *supervisor.Options
			app := &cli.App{Name: "ckpt-apptainer", Writer: io.Discard, ErrWriter: io.Discard, Commands: withCommonFlags([]*cli.Command{{
				Name: "launch", Flags: jobFlags(),
				Action: func(ctx *cli.Context) error { o := jobOptions(ctx); got = &o; return nil },
			}})}
			err := app.Run(append(append([]string{"ckpt-apptainer", "launch"}, c.args...), "--", "app"))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want an error with %q", err, c.err)
				}
				return
			}
			if err != nil || got == nil {
				t.Fatalf("launch %v: %v", c.args, err)
			}
			if !c.check(*got) {
				t.Errorf("launch %v with %v: options %+v", c.args, c.env, *got)
			}
		})
	}
}

// TestListEmpty: `list` where there is no checkpoint says so and fails, so
// that a script can tell.
func TestListEmpty(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"list"}, {"list", "--json"}} {
		err := newApp().Run(append([]string{"ckpt-apptainer"}, append(args, "--ckpt-dir", dir)...))
		if err == nil || !strings.Contains(err.Error(), "no checkpoint in "+dir) {
			t.Errorf("%v in an empty directory: %v, want an error saying there is no checkpoint", args, err)
		}
	}
}
