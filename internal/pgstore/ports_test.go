package pgstore_test

import (
	"dialsync/internal/apply"
	"dialsync/internal/pgstore"
)

// Queue is what the apply loop consumes. (External test package, so apply
// may import pgstore without a cycle.)
var _ apply.QueueStore = (*pgstore.Queue)(nil)
