package checkpoint_test

import (
	"dialsync/checkpoint"
	"dialsync/internal/apply"
)

// Store is what the apply loop consumes. (External test package: apply
// may import checkpoint for ErrFenced.)
var _ apply.Checkpointer = (*checkpoint.Store)(nil)
