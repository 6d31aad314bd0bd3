package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// exitCodeError carries the traced program's exit code out of `run`.
type exitCodeError struct{ code int }

func (e *exitCodeError) Error() string { return "" }
func (e *exitCodeError) ExitCode() int { return e.code }

func newRunCommand() *cobra.Command {
	f := &traceFlags{}
	cmd := &cobra.Command{
		Use:   "run -f PATTERN [-f PATTERN ...] [flags] -- PROGRAM [ARGS...]",
		Short: "Start a Go program with its functions traced from the first instruction",
		Long: `Start PROGRAM with the probes already live, so no call is missed, not even
in init functions. The program's stdin, stdout and stderr pass through, and
obs-agent exits with the program's exit code (128+N when signal N killed it).
SIGINT, SIGTERM and SIGHUP sent to obs-agent are forwarded to the program,
and obs-agent waits for it to exit; after --duration it stops tracing and
still waits.`,
		Example: `  sudo obs-agent run -f 'main.*' -- ./myservice --port 8080
  sudo obs-agent run -f 'github.com/acme/*' -x '*.String' --db /tmp/t.db -- ./job`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return errors.New("put the program after --, e.g. obs-agent run -f 'main.*' -- ./myservice")
			}
			if err := validate.First(f.validate(), f.validateMemory(cmd)); err != nil {
				return err
			}
			if err := checkPrivileges(); err != nil {
				return err
			}
			if err := applyGroup(f.group); err != nil {
				return err
			}
			stopUI, err := f.startUI(cmd)
			if err != nil {
				return err
			}
			defer stopUI()
			// SIGINT, SIGTERM and SIGHUP go to the program, and the session
			// lasts until it exits: they must not end the session, which
			// the root context does on SIGINT and SIGTERM.
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			defer signal.Stop(sigs)
			opts := f.options(cmd.ErrOrStderr())
			opts.Signals = sigs
			if opts.Metrics, err = f.listenMetrics(); err != nil {
				return err
			}
			if opts.Metrics != nil {
				defer opts.Metrics.Close()
			}
			// No status line: the program writes to the same terminal.
			res, err := agent.Run(context.WithoutCancel(cmd.Context()), args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), opts)
			if res != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "obs-agent:", res.Summary())
			}
			if err != nil {
				return err
			}
			code := res.ExitCode
			if res.Signaled {
				code += 128
			}
			if code != 0 {
				return &exitCodeError{code: code}
			}
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
