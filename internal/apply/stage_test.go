package apply

import (
	"slices"
	"testing"
)

// The stage names are metric label values used by deploy/ (alert rules,
// their tests, the dashboard): they must not change.
func TestStageLabels(t *testing.T) {
	for _, c := range []struct {
		s            Stage
		name, server string
	}{
		{StageLookup, "lookup", "mysql"},
		{StagePostgres, "postgres", "postgres"},
		{StageRedis, "redis", "redis"},
		{StageNATS, "nats", "nats"},
		{StageCheckpoint, "checkpoint", "postgres"},
		{StageOther, "other", "unknown"},
		{Stage(200), "other", "unknown"},
	} {
		if c.s.String() != c.name || c.s.Server() != c.server {
			t.Errorf("stage %d: %s/%s, want %s/%s", c.s, c.s, c.s.Server(), c.name, c.server)
		}
	}
	var names []string
	for _, s := range BatchStages() {
		names = append(names, s.String())
	}
	if want := []string{"lookup", "postgres", "redis", "nats", "checkpoint"}; !slices.Equal(names, want) ||
		len(BatchStats{}.Stages) != len(want) {
		t.Fatalf("batch stages %v (BatchStats.Stages has %d), want %v", names, len(BatchStats{}.Stages), want)
	}
}
