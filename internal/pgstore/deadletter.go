package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeadLetter is a source row that could not be processed and was set aside
// under its table's dead-letter policy instead of halting the pipeline.
type DeadLetter struct {
	ID   int64     // assigned by AddDeadLetter; zero on input
	At   time.Time // when it was recorded; zero on input means now
	File string    // binlog file of the transaction
	Pos  uint32    // binlog position of the transaction's end
	GTID string    // the transaction's GTID; empty without GTIDs
	// Table is the source table, PrimaryKey its primary key value(s) as
	// text (for example "42" or "42,7").
	Table      string
	PrimaryKey string
	// Seq is the change's index within its transaction: with the position
	// it identifies the row change, so recording it twice is a no-op.
	Seq       int
	Error     string          // why it failed
	RowImage  json.RawMessage // the row as JSON, nil unless the config allows row values
	RetriedAt *time.Time      // when an operator retried it; nil if never
}

// AddDeadLetter records d for this pipeline.
func (q *Queue) AddDeadLetter(ctx context.Context, d DeadLetter) error {
	var at any // NULL lets the column default (now()) apply
	if !d.At.IsZero() {
		at = d.At.UTC()
	}
	var img any
	if len(d.RowImage) > 0 {
		img = string(d.RowImage) // sent as text, parsed by PostgreSQL's jsonb input
	}
	_, err := q.pool.Exec(ctx, `INSERT INTO `+q.deadLetters+`
		(pipeline, at, file, pos, gtid, table_name, primary_key, error, row_image, seq)
		VALUES ($1, COALESCE($2::timestamptz, now()), $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
		ON CONFLICT (pipeline, gtid, file, pos, table_name, seq) DO NOTHING`,
		q.pipeline, at, d.File, int64(d.Pos), d.GTID, d.Table, d.PrimaryKey, d.Error, img, d.Seq)
	if err != nil {
		return fmt.Errorf("add dead letter (%s @ %s:%d): %w", d.Table, d.File, d.Pos, err)
	}
	return nil
}

// DeadLetters returns this pipeline's dead letters, newest first, at most
// limit (all when limit <= 0).
func (q *Queue) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	sql := `SELECT id, at, file, pos, gtid, table_name, primary_key, error, row_image::text, retried_at
		FROM ` + q.deadLetters + ` WHERE pipeline = $1 ORDER BY id DESC`
	args := []any{q.pipeline}
	if limit > 0 {
		sql += " LIMIT $2"
		args = append(args, limit)
	}
	rows, err := q.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeadLetter, error) {
		var d DeadLetter
		var pos int64
		var img *string
		if err := r.Scan(&d.ID, &d.At, &d.File, &pos, &d.GTID, &d.Table, &d.PrimaryKey, &d.Error, &img, &d.RetriedAt); err != nil {
			return d, err
		}
		d.Pos = uint32(pos)
		d.At = d.At.UTC()
		if d.RetriedAt != nil {
			t := d.RetriedAt.UTC()
			d.RetriedAt = &t
		}
		if img != nil {
			d.RowImage = json.RawMessage(*img)
		}
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	return out, nil
}

// MarkRetried records that dead letter id was retried now.
func (q *Queue) MarkRetried(ctx context.Context, id int64) error {
	tag, err := q.pool.Exec(ctx, `UPDATE `+q.deadLetters+` SET retried_at = now() WHERE pipeline = $1 AND id = $2`, q.pipeline, id)
	if err != nil {
		return fmt.Errorf("mark dead letter %d retried: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("mark dead letter %d retried: no such dead letter in pipeline %q", id, q.pipeline)
	}
	return nil
}

// HistoryPruner deletes rows of another owner inside Prune's transaction and
// returns how many: checkpoint.Store.PruneHistory, for the checkpoint
// history.
type HistoryPruner func(ctx context.Context, tx pgx.Tx, olderThan time.Duration) (int64, error)

// Prune deletes this pipeline's checkpoint history entries (through
// history, their owner's method; nil skips them) and dead letters recorded
// more than olderThan ago (housekeeping), in one transaction, and returns
// how many of each it deleted.
func (q *Queue) Prune(ctx context.Context, olderThan time.Duration, history HistoryPruner) (historyPruned, deadLetters int64, err error) {
	if olderThan < 0 {
		return 0, 0, fmt.Errorf("prune: negative age %s", olderThan)
	}
	secs := olderThan.Seconds()
	err = pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		if history != nil {
			n, err := history(ctx, tx, olderThan)
			if err != nil {
				return err
			}
			historyPruned = n
		}
		tag, err := tx.Exec(ctx, `DELETE FROM `+q.deadLetters+` WHERE pipeline = $1 AND at < now() - make_interval(secs => $2)`, q.pipeline, secs)
		if err != nil {
			return fmt.Errorf("dead letters: %w", err)
		}
		deadLetters = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("prune older than %s: %w", olderThan, err)
	}
	return historyPruned, deadLetters, nil
}
