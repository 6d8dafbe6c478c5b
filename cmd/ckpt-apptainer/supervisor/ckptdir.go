package supervisor

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// CkptDir resolves the checkpoint directory from --ckpt-dir (dir) and
// --instance. $DMTCP_CHECKPOINT_DIR is honoured so sites that already
// export it need no change. An explicit --ckpt-dir wins over --instance.
func CkptDir(dir, instance string) (string, error) {
	if instance != "" && dir == "" {
		return instanceCkptDir(instance)
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

// OpenStore opens the checkpoint directory CkptDir names, to read.
func OpenStore(dir, instance string) (*image.Store, error) {
	dir, err := CkptDir(dir, instance)
	if err != nil {
		return nil, err
	}
	return image.OpenStore(dir, false)
}
