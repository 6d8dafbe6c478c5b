package main

import (
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// A generation records the job's whole environment, and with it the
// access tokens and passwords jobs are given that way. `inspect` output is
// pasted into tickets and chats, so it hides the values of variables whose
// names say they are secret unless asked (--show-env).

// redacted stands for a hidden value.
const redacted = "<redacted: inspect --show-env shows it>"

// secretWords mark a variable's name as naming a secret.
var secretWords = []string{"TOKEN", "SECRET", "PASSW", "CREDENTIAL", "PRIVATE", "AUTH", "COOKIE", "SESSION", "APIKEY", "API_KEY", "ACCESS_KEY"}

// secretName says whether the variable name looks like it holds a secret.
func secretName(name string) bool {
	up := strings.ToUpper(name)
	if strings.HasSuffix(up, "_KEY") || up == "KEY" {
		return true
	}
	for _, w := range secretWords {
		if strings.Contains(up, w) {
			return true
		}
	}
	return false
}

// redactEnv returns env with the values of secret-looking variables
// replaced; env itself is left alone.
func redactEnv(env []string) []string {
	if env == nil {
		return nil
	}
	out := make([]string, len(env))
	for i, kv := range env {
		name, _, ok := strings.Cut(kv, "=")
		if ok && secretName(name) {
			kv = name + "=" + redacted
		}
		out[i] = kv
	}
	return out
}

// redactManifest returns a copy of m whose job and container environments
// are redacted.
func redactManifest(m *image.Manifest) *image.Manifest {
	if m == nil {
		return nil
	}
	c := *m
	c.Job.Env = redactEnv(m.Job.Env)
	if m.Container != nil {
		ct := *m.Container
		ct.Env = redactEnv(m.Container.Env)
		c.Container = &ct
	}
	return &c
}
