package main

import (
	"dialsync/internal/config"
	"dialsync/internal/publish"
)

// streamConfig is the notices stream as the config describes it: what run
// creates or widens, and what check judges (both through publish).
func streamConfig(cfg *config.Config) publish.Config {
	return publish.Config{
		URL: cfg.NATS.URL, Stream: cfg.NATS.Stream, SubjectPrefix: cfg.NATS.SubjectPrefix,
		ManageStream: cfg.NATS.ManageStream, ShrinkStream: cfg.NATS.ShrinkStream,
		DuplicateWindow: cfg.NATS.DuplicateWindow.Duration(),
		MaxAge:          cfg.NATS.MaxAge.Duration(), MaxBytes: int64(cfg.NATS.MaxBytes), Replicas: cfg.NATS.Replicas,
		Storage: cfg.NATS.Storage,
	}
}
