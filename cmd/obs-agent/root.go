package main

import (
	"errors"
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// exitCoder is an error that carries the process exit code, such as the
// traced program's own code for `obs-agent run`.
type exitCoder interface {
	error
	ExitCode() int
}

func asExitCoder(err error, target *exitCoder) bool { return errors.As(err, target) }

// globalFlags are shared by every subcommand.
type globalFlags struct {
	debug bool
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "obs-agent",
		Short: "Zero-code function tracer for Go programs",
		Long: `obs-agent attaches eBPF uprobes to the functions of a Go program, chosen by
glob patterns over their full symbol names, and records every call: its
duration, goroutine, parent call, and returned error or panic. Records go to a
local SQLite store that you query with 'obs-agent query'.

  sudo obs-agent attach --pid 4242 -f 'main.*' -f 'github.com/acme/api/*'
  sudo obs-agent run -f 'main.*' -- ./myservice --port 8080
  obs-agent list --binary ./myservice -f 'github.com/acme/*'
  obs-agent query calls --since 5m`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			level := slog.LevelInfo
			if g.debug {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().BoolVar(&g.debug, "debug", false, "log debug detail to stderr")
	root.AddCommand(
		newAttachCommand(),
		newRunCommand(),
		newListCommand(),
		newQueryCommand(),
		newRetentionCommand(),
		newExportCommand(),
		newVersionCommand(),
	)
	return root
}
