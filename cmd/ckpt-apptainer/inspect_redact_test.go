package main

import (
	"slices"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// TestRedactEnv: values of variables whose names look secret are hidden,
// the others and the recorded manifest are left as they are.
func TestRedactEnv(t *testing.T) {
	env := []string{"HOME=/home/u", "GITHUB_TOKEN=ghp_x", "AWS_SECRET_ACCESS_KEY=abc", "DB_PASSWORD=pw",
		"SSH_AUTH_SOCK=/run/a", "WANDB_API_KEY=k", "PATH=/bin", "KEYBOARD=us", "MONKEY=x", "NOVALUE"}
	want := []string{"HOME=/home/u", "GITHUB_TOKEN=" + redacted, "AWS_SECRET_ACCESS_KEY=" + redacted, "DB_PASSWORD=" + redacted,
		"SSH_AUTH_SOCK=" + redacted, "WANDB_API_KEY=" + redacted, "PATH=/bin", "KEYBOARD=us", "MONKEY=x", "NOVALUE"}
	if got := redactEnv(env); !slices.Equal(got, want) {
		t.Errorf("redactEnv:\n got %q\nwant %q", got, want)
	}
	m := &image.Manifest{Job: image.Job{Env: env}, Container: &image.Container{Env: []string{"APPTAINERENV_HF_TOKEN=t"}}}
	r := redactManifest(m)
	if r.Job.Env[1] != "GITHUB_TOKEN="+redacted || r.Container.Env[0] != "APPTAINERENV_HF_TOKEN="+redacted {
		t.Errorf("redacted manifest: job %q, container %q", r.Job.Env, r.Container.Env)
	}
	if m.Job.Env[1] != "GITHUB_TOKEN=ghp_x" || m.Container.Env[0] != "APPTAINERENV_HF_TOKEN=t" {
		t.Error("redactManifest changed the manifest it was given")
	}
}
