package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// ckptDirFlag is the --ckpt-dir flag shared by every command.
var ckptDirFlag = &cli.StringFlag{
	Name:  "ckpt-dir",
	Usage: "checkpoint directory (default: $CKPT_APPTAINER_DIR, else $DMTCP_CHECKPOINT_DIR, else ./ckpt)",
}

// instanceFlag names an Apptainer instance instead of its checkpoint
// directory.
var instanceFlag = &cli.StringFlag{
	Name:  "instance",
	Usage: "the job of Apptainer instance `NAME` (started with `ckpt-apptainer launch -- apptainer instance start IMAGE NAME`): use its checkpoint directory",
}

// ckptDir resolves the checkpoint directory. $DMTCP_CHECKPOINT_DIR is
// honoured so sites that already export it need no change. An explicit
// --ckpt-dir wins over --instance.
func ckptDir(c *cli.Context) (string, error) {
	dir := c.String("ckpt-dir")
	if name := c.String("instance"); name != "" && dir == "" {
		return instanceCkptDir(name)
	}
	for _, env := range []string{"CKPT_APPTAINER_DIR", "DMTCP_CHECKPOINT_DIR"} {
		if dir == "" {
			dir = os.Getenv(env)
		}
	}
	if dir == "" {
		dir = "ckpt"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("checkpoint directory %s: %w", dir, err)
	}
	return abs, nil
}

// openCkptStore opens the checkpoint directory the command names, to read.
func openCkptStore(c *cli.Context) (*image.Store, error) {
	dir, err := ckptDir(c)
	if err != nil {
		return nil, err
	}
	return image.OpenStore(dir, false)
}
