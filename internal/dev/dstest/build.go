package dstest

import (
	"fmt"
	"os/exec"
)

// BuildDialsync builds the dialsync binary from this module's source into
// out; it works from any folder inside the module.
func BuildDialsync(out string) error {
	if b, err := exec.Command("go", "build", "-o", out, "dialsync/cmd/dialsync").CombinedOutput(); err != nil {
		return fmt.Errorf("build dialsync: %v\n%s", err, b)
	}
	return nil
}
