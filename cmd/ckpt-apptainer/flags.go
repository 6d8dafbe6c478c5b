package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
)

// parseDuration reads a time the way users write one: plain seconds
// ("90", as DMTCP_CHECKPOINT_INTERVAL and SBATCH scripts have it) or a Go
// duration ("90s", "5m", "1h30m").
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration: give seconds (90) or a duration (90s, 5m, 1h)")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > int64(time.Duration(1<<62)/time.Second) {
			return 0, fmt.Errorf("%q: too long", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: give seconds (90) or a duration (90s, 5m, 1h)", s)
	}
	return d, nil
}

// durationValue is a flag value parsed by parseDuration.
type durationValue struct{ d time.Duration }

func (v *durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	v.d = d
	return nil
}

func (v *durationValue) String() string {
	if v == nil {
		return "0s"
	}
	return v.d.String()
}

// durationFlag is a flag taking seconds or a duration, default def.
func durationFlag(name string, aliases, env []string, def time.Duration, usage string) *cli.GenericFlag {
	return &cli.GenericFlag{Name: name, Aliases: aliases, EnvVars: env, Value: &durationValue{d: def}, Usage: usage}
}

// durationOf is the value of a durationFlag.
func durationOf(c *cli.Context, name string) time.Duration {
	if v, ok := c.Generic(name).(*durationValue); ok {
		return v.d
	}
	return 0
}

// debugFlag is --debug, taken before or after the command.
var debugFlag = &cli.BoolFlag{Name: "debug", Usage: "log the engine's steps"}

// withCommonFlags gives every command the global flags as well, so that
// `ckpt-apptainer launch --debug` works as `ckpt-apptainer --debug launch`.
func withCommonFlags(cmds []*cli.Command) []*cli.Command {
	for _, cmd := range cmds {
		cmd.Flags = append(cmd.Flags, debugFlag, logFormatFlag)
		before := cmd.Before
		cmd.Before = func(c *cli.Context) error {
			if c.Bool("debug") {
				logrus.SetLevel(logrus.DebugLevel)
			}
			if c.IsSet("log-format") {
				f, err := logFormatter(c.String("log-format"), os.Stderr)
				if err != nil {
					return err
				}
				logrus.SetFormatter(f)
			}
			if before != nil {
				return before(c)
			}
			return nil
		}
	}
	return cmds
}
