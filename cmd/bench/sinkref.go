package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/clients"
	"dialsync/internal/publish"
	"dialsync/notice"
)

// The sink-limit reference of the catch-up scenario: how fast the NATS
// server takes exactly the notices dialsync sent for the backlog, from a
// bare publisher. After dialsync drained the backlog, the notices it
// published (stream sequences after the stopped pipeline's last one, up to
// the stream's last once the checkpoint reached the head: a checkpoint
// moves only after its notices were acknowledged) are read back, and sent
// again, same count, sizes, ids and order, through internal/publish's
// Publisher (the same ack window: at most publish.MaxInFlight unacknowledged,
// every ack awaited) to a fresh stream made from the same [nats] config.
// Only the publish is timed. The subjects keep their shape and length:
// two streams cannot capture the same subjects, so the reference's prefix
// is the run name with "sinkr_" for "bench_" (and its stream likewise).
// All notices go in one Publish call, so the window stays full from the
// first notice to the last: the rate the sink allows, which dialsync's
// per-batch publishes can approach but not pass.

// sinkPrefix turns the run's name ("bench_<hex>") into the reference's
// subject prefix of the same length.
func sinkPrefix(name string) string { return "sinkr_" + strings.TrimPrefix(name, "bench_") }

// streamLastSeq is the stream's last sequence (0 when empty).
func (b *bench) streamLastSeq(ctx context.Context, stream string) (uint64, error) {
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	return info.State.LastSeq, nil
}

// readNotices reads the messages of stream with sequences after..upTo,
// with their subject prefix swapped from -> to.
func (b *bench) readNotices(ctx context.Context, stream string, after, upTo uint64, from, to string) ([]notice.Message, int64, error) {
	if upTo <= after {
		return nil, 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cons, err := b.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read back the notices of %s: %w", stream, err)
	}
	msgs := make([]notice.Message, 0, upTo-after)
	var size int64
	for {
		batch, err := cons.Fetch(4096, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, 0, fmt.Errorf("read back the notices of %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, 0, fmt.Errorf("read back the notices of %s: %w", stream, err)
			}
			subj, ok := strings.CutPrefix(m.Subject(), from)
			if !ok {
				return nil, 0, fmt.Errorf("notice subject %q outside %s", m.Subject(), from)
			}
			id := m.Headers().Get(jetstream.MsgIDHeader)
			if id == "" {
				return nil, 0, fmt.Errorf("notice at sequence %d has no %s", md.Sequence.Stream, jetstream.MsgIDHeader)
			}
			msgs = append(msgs, notice.Message{Subject: to + subj, ID: id, Data: m.Data()})
			size += int64(len(m.Data()))
			if md.Sequence.Stream >= upTo {
				return msgs, size, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, 0, fmt.Errorf("read back the notices of %s: %w", stream, err)
		}
		if got == 0 {
			return nil, 0, fmt.Errorf("read back the notices of %s: stopped at %d of %d messages", stream, len(msgs), upTo-after)
		}
	}
}

// sinkRun is one reference publish.
type sinkRun struct {
	notices int
	bytes   int64
	took    time.Duration
}

// sinkReference republishes the notices of pc's stream after seq after
// (up to its current last) to a fresh stream and times the publish.
func (b *bench) sinkReference(ctx context.Context, pc pipeCfg, after uint64) (sinkRun, error) {
	last, err := b.streamLastSeq(ctx, pc.stream)
	if err != nil {
		return sinkRun{}, err
	}
	ref := pipeCfg{schema: pc.schema, stream: strings.ToUpper(sinkPrefix(b.name)), subjects: sinkPrefix(b.name)}
	if len(ref.stream) != len(pc.stream) || len(ref.subjects) != len(pc.subjects) {
		return sinkRun{}, fmt.Errorf("sink reference names %s/%s do not match %s/%s in length", ref.stream, ref.subjects, pc.stream, pc.subjects)
	}
	msgs, size, err := b.readNotices(ctx, pc.stream, after, last, pc.subjects, ref.subjects)
	if err != nil {
		return sinkRun{}, err
	}
	// A fresh stream, made by the Publisher from the same config as
	// dialsync's (managed, same duplicate window, retention, storage).
	_ = b.js.DeleteStream(ctx, ref.stream)
	defer func() { _ = b.js.DeleteStream(context.Background(), ref.stream) }()
	pcfg, err := clients.PublishConfig(b.pipeConfig(ref), nil, b.log)
	if err != nil {
		return sinkRun{}, err
	}
	// Errors only: its Close logs a disconnect warning.
	quiet := slog.New(slog.NewTextHandler(logWriter{b.log, "sink reference: "}, &slog.HandlerOptions{Level: slog.LevelError}))
	pub, err := publish.Open(ctx, pcfg, quiet)
	if err != nil {
		return sinkRun{}, fmt.Errorf("sink reference publisher: %w", err)
	}
	defer pub.Close()
	t0 := time.Now()
	if err := pub.Publish(ctx, msgs); err != nil {
		return sinkRun{}, fmt.Errorf("sink reference publish: %w", err)
	}
	took := time.Since(t0)
	// Every notice must have been stored: a dropped one would flatter the
	// reference.
	n, err := b.streamLastSeq(ctx, ref.stream)
	if err != nil {
		return sinkRun{}, err
	}
	if n != uint64(len(msgs)) {
		return sinkRun{}, fmt.Errorf("sink reference: the fresh stream holds %d of %d notices (ids repeated within the batch?)", n, len(msgs))
	}
	return sinkRun{notices: len(msgs), bytes: size, took: took}, nil
}
