package apply

// Stage names a part of the work: the stages a batch is timed in
// (BatchStats.Stages) and the label of every retried operation
// (Config.OnRetry, Loop.Retry). Its String is the metric label value: the
// stage label of dialsync_stage_duration_seconds, dialsync_retries_total
// and dialsync_errors_total, which the alert rules and the dashboard in
// deploy/ use, so these strings must not change.
type Stage uint8

const (
	StageLookup     Stage = iota // the lookup server (the MySQL source)
	StagePostgres                // the queue, its outbox, dead letters
	StageRedis                   // cache key deletes
	StageNATS                    // publishing notices
	StageCheckpoint              // the checkpoint write
	// StageOther labels retried operations of none of the stages above
	// (recording a dead letter, a dry-run diff).
	StageOther
)

// batchStages is the number of stages a batch is timed in: StageLookup to
// StageCheckpoint.
const batchStages = int(StageCheckpoint) + 1

var stageNames = [...]string{"lookup", "postgres", "redis", "nats", "checkpoint", "other"}

// stageServers are the server label values that go with each stage.
var stageServers = [...]string{"mysql", "postgres", "redis", "nats", "postgres", "unknown"}

// String is the stage's metric label value.
func (s Stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return "other"
}

// Server is the server label value of the stage's retries and errors:
// mysql, postgres, redis, nats, or unknown (StageOther).
func (s Stage) Server() string {
	if int(s) < len(stageServers) {
		return stageServers[s]
	}
	return "unknown"
}

// BatchStages lists the stages of BatchStats.Stages, in index order.
func BatchStages() []Stage {
	s := make([]Stage, batchStages)
	for i := range s {
		s[i] = Stage(i)
	}
	return s
}
