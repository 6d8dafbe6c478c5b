package apptainer

import (
	"fmt"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// imageFileAdvice is what a user with a non-file image is told to do.
const imageFileAdvice = "only SIF/squashfs image files are supported, build one with `apptainer build IMAGE.sif SOURCE`"

// uriPrefixes are image sources that are not a local file. Apptainer
// fetches or converts them into a cache or a temporary directory at each
// start, so a restart could not be sure to get the same container.
var uriPrefixes = []string{
	"docker://", "docker-archive:", "docker-daemon:", "library://", "oras://",
	"shub://", "http://", "https://", "oci:", "oci-archive:", "oci-sif:",
}

// checkImage refuses image arguments that are not a local image file, as
// far as the command line tells (NewRecord checks the file itself).
func (c *Command) checkImage() error {
	img := c.Image
	if strings.HasPrefix(img, "instance://") {
		return fmt.Errorf("%s %s %s %w: it joins an instance started outside the job, whose processes the job cannot checkpoint; run the application with %s exec IMAGE, or put it in the instance's startscript and launch the instance itself (ckpt-apptainer launch -- %s instance start IMAGE NAME)", c.Runtime, c.Subcommand, img, ErrUnsupported, c.Runtime, c.Runtime)
	}
	for _, p := range uriPrefixes {
		if strings.HasPrefix(img, p) {
			return fmt.Errorf("%s %s %s: image %q %w: %s", c.Runtime, c.Subcommand, img, img, ErrUnsupported, imageFileAdvice)
		}
	}
	if strings.Contains(img, "://") {
		return fmt.Errorf("%s %s: image %q %w: %s", c.Runtime, c.Subcommand, img, ErrUnsupported, imageFileAdvice)
	}
	return nil
}

// refusal says why a job run with an option cannot be checkpointed.
type refusal struct {
	name string
	why  string
}

// refusals are the options whose effect a restart cannot reproduce.
var refusals = []refusal{
	{"fakeroot", "the fakeroot user namespace (root inside, subordinate ids outside) is not checkpointed"},
	{"writable", "changes it makes to the image cannot be rolled back to the checkpoint"},
	{"writable-tmpfs", "files written to the temporary overlay are lost when the container stops, so a restart could not find them"},
	{"compat", "it implies --writable-tmpfs, whose files are lost when the container stops"},
	{"nvccli", "the NVIDIA container CLI's setup is not reproduced at restart; use --nv, whose GPU jobs are checkpointed"},
	{"rocm", "AMD GPU state is not checkpointed"},
	{"net", "network namespaces and their interfaces are not checkpointed"},
	{"sharens", "the namespaces are shared with other containers, which are not part of the job"},
	{"passphrase", "a restart would ask for the passphrase again with nobody to answer; use --pem-path"},
	{"boot", "a booted init system is not checkpointed"},
	{"syos", "the SyOS shell is not supported"},
}

// valueRefusals are options with a value whose effect a restart cannot
// reproduce, whatever the value.
var valueRefusals = []refusal{
	{"fusemount", "FUSE daemons started for the container cannot be checkpointed"},
	{"network", "network namespaces and their interfaces are not checkpointed"},
	{"network-args", "network namespaces and their interfaces are not checkpointed"},
	{"netns-path", "network namespaces and their interfaces are not checkpointed"},
	{"dmtcp-launch", "Apptainer's DMTCP checkpointing cannot be combined with ckpt-apptainer"},
	{"dmtcp-restart", "Apptainer's DMTCP checkpointing cannot be combined with ckpt-apptainer"},
}

// checkOptions refuses options whose effect a restart cannot reproduce.
func (c *Command) checkOptions() error {
	what := c.Runtime + " " + c.Subcommand
	for _, r := range refusals {
		if c.has(r.name) {
			return fmt.Errorf("%s --%s %w: %s", what, r.name, ErrUnsupported, r.why)
		}
	}
	for _, r := range valueRefusals {
		if v := c.values(r.name); len(v) > 0 && v[0] != "" {
			return fmt.Errorf("%s --%s %w: %s", what, r.name, ErrUnsupported, r.why)
		}
	}
	for _, v := range c.values("overlay") {
		for _, o := range strings.Split(v, ",") {
			if o != "" && !strings.HasSuffix(o, ":ro") {
				return fmt.Errorf("%s --overlay %s %w: changes written to a writable overlay cannot be rolled back to the checkpoint (add :ro to use it read-only)", what, o, ErrUnsupported)
			}
		}
	}
	if len(c.values("scratch")) > 0 && len(c.values("workdir")) == 0 {
		return fmt.Errorf("%s --scratch %w without --workdir: scratch directories are temporary and their files are lost when the container stops (give --workdir DIR to keep them)", what, ErrUnsupported)
	}
	return nil
}

// bindEnv are the variables that add --bind specifications, APPTAINER_
// ones first; the SINGULARITY_ spelling counts only when the APPTAINER_
// one is not set.
var bindEnv = []string{"BIND", "BINDPATH"}

// binds collects the host paths bound into the container.
func (c *Command) binds(env []string) ([]image.Bind, error) {
	var out []image.Bind
	specs := c.values("bind")
	for _, key := range bindEnv {
		if v, ok := envValue(env, key); ok && v != "" {
			specs = append(specs, v)
		}
	}
	for _, s := range specs {
		b, err := parseBindList(s)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", c.Runtime, c.Subcommand, err)
		}
		out = append(out, b...)
	}
	for _, s := range c.values("mount") {
		b, err := parseMount(s)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", c.Runtime, c.Subcommand, err)
		}
		out = append(out, b)
	}
	if h := c.values("home"); len(h) > 0 && !c.has("no-home") {
		src, dst, _ := strings.Cut(h[len(h)-1], ":")
		if dst == "" {
			dst = src
		}
		out = append(out, image.Bind{Source: src, Destination: dst, Options: "home"})
	}
	return out, nil
}

// bindOption tells whether a comma-separated piece of a bind list is an
// option of the previous bind ("src:dst:image-src=/x,ro") and not a bind
// of its own.
func bindOption(s string) bool {
	return s == "ro" || s == "rw" || strings.HasPrefix(s, "image-src=") || strings.HasPrefix(s, "id=")
}

// parseBindList parses a comma-separated list of src[:dst[:opts]].
func parseBindList(list string) ([]image.Bind, error) {
	var out []image.Bind
	for _, piece := range strings.Split(list, ",") {
		if piece == "" {
			continue
		}
		if bindOption(piece) && len(out) > 0 && out[len(out)-1].Options != "" {
			out[len(out)-1].Options += "," + piece
			continue
		}
		parts := strings.SplitN(piece, ":", 3)
		b := image.Bind{Source: parts[0], Destination: parts[0]}
		if len(parts) > 1 && parts[1] != "" {
			b.Destination = parts[1]
		}
		if len(parts) > 2 {
			b.Options = parts[2]
		}
		if b.Source == "" {
			return nil, fmt.Errorf("bind %q has no source", piece)
		}
		out = append(out, b)
	}
	return out, nil
}

// parseMount parses a --mount specification of type bind.
func parseMount(spec string) (image.Bind, error) {
	var b image.Bind
	typ := ""
	var opts []string
	for _, f := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "type":
			typ = v
		case "source", "src":
			b.Source = v
		case "destination", "dst", "target":
			b.Destination = v
		case "ro", "readonly":
			opts = append(opts, "ro")
		case "image-src", "id":
			opts = append(opts, f)
		case "bind-propagation", "":
		default:
			return b, fmt.Errorf("--mount %q: unknown field %q", spec, k)
		}
	}
	if typ != "bind" {
		return b, fmt.Errorf("--mount %q: type %q %w: only type=bind mounts are supported", spec, typ, ErrUnsupported)
	}
	if b.Source == "" || b.Destination == "" {
		return b, fmt.Errorf("--mount %q: needs both source and destination", spec)
	}
	b.Options = strings.Join(opts, ",")
	return b, nil
}
