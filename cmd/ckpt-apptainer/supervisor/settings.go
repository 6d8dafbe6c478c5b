package supervisor

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// A job's settings are recorded in its checkpoint directory each time it
// is supervised, so that `restart` and `run` go on with the interval,
// generations kept, stop signal, ... the job was launched with, unless the
// command line sets them again; and so that the "resume it with" hint is
// a command that works as printed.

// setting is one recorded option, by the flag that sets it.
type setting struct {
	flag string
	// field points at the option in o.
	field func(o *Options) any
}

// settings are the options a job keeps across restarts. Options that
// belong to one restart (--image, --no-rollback, --strict, --force), the
// directory itself, and --cgroup-parent, a cgroup of this node and often
// of this batch job, which a requeued job on another node does not have,
// are not among them.
var settings = []setting{
	{"interval", func(o *Options) any { return &o.Interval }},
	{"keep", func(o *Options) any { return &o.Keep }},
	{"incremental", func(o *Options) any { return &o.Incremental }},
	{"precopy", func(o *Options) any { return &o.PreCopy }},
	{"compress", func(o *Options) any { return &o.Compress }},
	{"no-cgroup", func(o *Options) any { return &o.NoCgroup }},
	{"no-timens", func(o *Options) any { return &o.NoTimens }},
	{"net", func(o *Options) any { return &o.Net }},
	{"signal", func(o *Options) any { return &o.Signal }},
	{"hooks", func(o *Options) any { return &o.Hooks }},
	{"requeue", func(o *Options) any { return &o.Requeue }},
	{"first-checkpoint", func(o *Options) any { return &o.FirstCheckpoint }},
	{"require-checkpoint", func(o *Options) any { return &o.RequireCheckpoint }},
	{"local-limit", func(o *Options) any { return &o.LocalLimit }},
	{"dump-buffer", func(o *Options) any { return &o.DumpBuffer }},
	{"gpu-lock-timeout", func(o *Options) any { return &o.GPULockTimeout }},
}

// RecordedFlags names the flags whose values a job keeps across restarts.
func RecordedFlags() []string {
	names := make([]string, len(settings))
	for i, st := range settings {
		names[i] = st.flag
	}
	return names
}

// encodeSettings renders o's recorded settings as the settings file.
// Paths are made absolute: a restart may run in another directory.
func encodeSettings(o Options) ([]byte, error) {
	if o.Hooks != "" {
		abs, err := filepath.Abs(o.Hooks)
		if err != nil {
			return nil, err
		}
		o.Hooks = abs
	}
	m := make(map[string]any, len(settings))
	for _, st := range settings {
		v := st.field(&o)
		if d, ok := v.(*time.Duration); ok {
			v = (*Duration)(d)
		}
		m[st.flag] = v
	}
	return json.MarshalIndent(m, "", "  ")
}

// applySettings sets in o each recorded setting that the command line did
// not set (o.Explicit), and returns the flags that changed o, as a user
// would type them.
func applySettings(o *Options, b []byte) ([]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", image.SettingsName, err)
	}
	var changed []string
	for _, st := range settings {
		raw, ok := m[st.flag]
		if !ok || o.Explicit[st.flag] {
			continue
		}
		before := flagText(st.flag, st.field(o))
		if err := decodeSetting(raw, st.field(o)); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", image.SettingsName, st.flag, err)
		}
		if after := flagText(st.flag, st.field(o)); after != before {
			changed = append(changed, after)
		}
	}
	return changed, nil
}

// decodeSetting reads one recorded value into the option at p; times are
// recorded as Durations.
func decodeSetting(raw json.RawMessage, p any) error {
	if d, ok := p.(*time.Duration); ok {
		p = (*Duration)(d)
	}
	return json.Unmarshal(raw, p)
}

// flagText renders the option at p as the flag that sets it.
func flagText(flag string, p any) string {
	switch v := p.(type) {
	case *bool:
		if *v {
			return "--" + flag
		}
		return "--" + flag + "=false"
	case *time.Duration:
		return "--" + flag + " " + v.String()
	case *int:
		return "--" + flag + " " + strconv.Itoa(*v)
	case *int64:
		return "--" + flag + " " + strconv.FormatInt(*v, 10)
	case *string:
		return "--" + flag + " " + shellQuote(*v)
	}
	return "--" + flag
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@%+,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// recordSettings writes the job's settings into the checkpoint directory,
// once the job is about to be started or restored (a refused command
// leaves the directory as it was).
func (s *supervisor) recordSettings() {
	b, err := encodeSettings(s.opts)
	if err == nil {
		err = s.store.WriteSettings(append(b, '\n'))
	}
	if err != nil {
		s.log.Warnf("%v: a restart of this job takes the defaults for what its command line does not give", err)
	}
}

// reuseSettings takes the settings the directory's job was last supervised
// with for those the command line did not set, and says which it took.
func reuseSettings(st *image.Store, o *Options) error {
	b, err := st.Settings()
	if err != nil || b == nil {
		return err
	}
	changed, err := applySettings(o, b)
	if err != nil {
		return fmt.Errorf("checkpoint directory %s: %w (remove the file to restart with the defaults and the flags given)", st.Dir, err)
	}
	if len(changed) > 0 {
		logrus.Infof("the job's recorded settings apply: %s (flags given here override them)", strings.Join(changed, " "))
	}
	return nil
}
