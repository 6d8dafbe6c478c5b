package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// version, commit and buildDate are set at build time (make build, make
// release) with -ldflags "-X main.version=... -X main.commit=...
// -X main.buildDate=...". Without them the commit is the one the Go
// toolchain recorded, if it did.
var (
	version   = "0.1.0-dev"
	commit    = ""
	buildDate = ""
)

// versionInfo is what `version` prints.
type versionInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Built    string `json:"built,omitempty"`
	Platform string `json:"platform"`
}

// buildVersion reads the version, and the commit the Go toolchain records
// when it builds from a git checkout.
func buildVersion() versionInfo {
	v := versionInfo{Version: version, Go: runtime.Version(), Built: buildDate, Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if c, dirty := strings.CutSuffix(commit, "-dirty"); c != "" {
		v.Commit, v.Modified = c, dirty
		return v
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the commit and the Go release it was built from",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			v := buildVersion()
			if c.Bool("json") {
				return json.NewEncoder(os.Stdout).Encode(v)
			}
			fmt.Printf("ckpt-apptainer %s\n", v.Version)
			if v.Commit != "" {
				mod := ""
				if v.Modified {
					mod = " (with uncommitted changes)"
				}
				fmt.Printf("commit    %s%s\n", v.Commit, mod)
			}
			if v.Built != "" {
				fmt.Printf("built     %s\n", v.Built)
			}
			fmt.Printf("go        %s %s\n", v.Go, v.Platform)
			return nil
		},
	}
}
