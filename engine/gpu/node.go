package gpu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// procRoot is where the NVIDIA driver describes itself and its GPUs;
// $CKPT_APPTAINER_NVIDIA_PROC points elsewhere (the tests' stand-in for a
// GPU node).
const procRoot = "/proc/driver/nvidia"

func procDir() string {
	if d := os.Getenv("CKPT_APPTAINER_NVIDIA_PROC"); d != "" {
		return d
	}
	return procRoot
}

// Node is what this node has: the driver's version and its GPUs.
type Node struct {
	Driver  string
	Devices []Device
}

// Device is one GPU of the node.
type Device struct {
	Minor int
	Model string
	UUID  string
	BusID string
}

// ErrNoDriver says the node has no NVIDIA driver loaded.
var ErrNoDriver = errors.New("no NVIDIA driver on this node (no /proc/driver/nvidia)")

// ReadNode reads the driver's version and GPUs from /proc/driver/nvidia.
func ReadNode() (*Node, error) {
	root := procDir()
	b, err := os.ReadFile(filepath.Join(root, "version"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoDriver
	}
	if err != nil {
		return nil, err
	}
	n := &Node{}
	if n.Driver, err = parseDriverVersion(string(b)); err != nil {
		return nil, err
	}
	dirs, err := filepath.Glob(filepath.Join(root, "gpus", "*", "information"))
	if err != nil {
		return nil, err
	}
	for _, path := range dirs {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		d, err := parseInformation(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		d.BusID = filepath.Base(filepath.Dir(path))
		n.Devices = append(n.Devices, d)
	}
	sort.Slice(n.Devices, func(i, j int) bool { return n.Devices[i].Minor < n.Devices[j].Minor })
	return n, nil
}

var driverVersionRE = regexp.MustCompile(`Kernel Module\s+(?:for \S+\s+)?([0-9]+(?:\.[0-9]+)+)`)

// parseDriverVersion finds the version in /proc/driver/nvidia/version:
//
//	NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (...)
func parseDriverVersion(s string) (string, error) {
	m := driverVersionRE.FindStringSubmatch(s)
	if m == nil {
		return "", fmt.Errorf("no driver version in %q", strings.SplitN(s, "\n", 2)[0])
	}
	return m[1], nil
}

// parseInformation reads a GPU's /proc/driver/nvidia/gpus/BUS/information:
//
//	Model:           NVIDIA H200
//	GPU UUID:        GPU-2f1c...
//	Device Minor:    0
func parseInformation(r io.Reader) (Device, error) {
	d := Device{Minor: -1}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Model":
			d.Model = v
		case "GPU UUID":
			d.UUID = v
		case "Device Minor":
			n, err := strconv.Atoi(v)
			if err != nil {
				return d, fmt.Errorf("device minor %q: %w", v, err)
			}
			d.Minor = n
		}
	}
	if err := sc.Err(); err != nil {
		return d, err
	}
	if d.Model == "" || d.UUID == "" || d.Minor < 0 {
		return d, fmt.Errorf("want Model, GPU UUID and Device Minor")
	}
	return d, nil
}

// ByMinor finds the device with /dev/nvidia minor.
func (n *Node) ByMinor(minor int) (Device, bool) {
	for _, d := range n.Devices {
		if d.Minor == minor {
			return d, true
		}
	}
	return Device{}, false
}
