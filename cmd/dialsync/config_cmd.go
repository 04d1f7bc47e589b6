package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"dialsync/internal/config"
)

func init() {
	register(command{70, "config", "validate, print: check the configuration without any server, show the effective one", runConfigCmd})
}

const configUsage = `usage: dialsync config <subcommand> [--config PATH] [flags]

subcommands:
  validate            load the file and the DIALSYNC_* environment, check every key
                      (syntax, types, ranges, rules.queue_sql's {users}, secret files);
                      contacts no server. Prints "config OK" or the one-line error.
  print    [--json]   the effective configuration (defaults < file < environment), secrets
                      REDACTED, each key with where its value came from: default, file or
                      environment (naming the variable)

Exit status: 0 valid (printed), 2 invalid configuration or bad arguments.
A valid configuration can still fail against the servers: 'dialsync check' tries them.`

func runConfigCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, fs, cfgPath, ok, err := subcommand("config", "validate or print", configUsage, args, stderr)
	if !ok {
		return err
	}
	var asJSON bool
	switch sub {
	case "validate":
	case "print":
		fs.BoolVar(&asJSON, "json", false, "print a JSON array of {key, value, from, env, secret_file}")
	default:
		fmt.Fprintln(stderr, configUsage)
		return usagef("config: unknown subcommand %q (validate or print)", sub)
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("config %s: unexpected argument %q", sub, fs.Arg(0))
	}
	// The same checks and loader as every command (loadConfig: unknown
	// DIALSYNC_* variables, then config.Load, which is LoadSources without
	// the origins), so what validates here is what run accepts.
	if err := config.CheckEnv(os.Environ()); err != nil {
		return usageError{Err: err}
	}
	_, srcs, err := config.LoadSources(*cfgPath, os.LookupEnv)
	if err != nil {
		return usageError{Err: err}
	}
	if sub == "validate" {
		fmt.Fprintln(stdout, "config OK")
		return nil
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(srcs); err != nil {
			return fmt.Errorf("config print: write json: %w", err)
		}
		return nil
	}
	fmt.Fprintf(stdout, "# dialsync: the effective configuration from %s and the environment.\n"+
		"# Secrets show as %s (or empty when read from their _file); the comment on\n"+
		"# each key says where its value came from.\n\n", *cfgPath, config.Redacted)
	fmt.Fprint(stdout, srcs.TOML())
	return nil
}
