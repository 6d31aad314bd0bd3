package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/agent"
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
obs-agent exits with the program's exit code (128+N when signal N killed it).`,
		Example: `  sudo obs-agent run -f 'main.*' -- ./myservice --port 8080
  sudo obs-agent run -f 'github.com/acme/*' -x '*.String' --db /tmp/t.db -- ./job`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return errors.New("put the program after --, e.g. obs-agent run -f 'main.*' -- ./myservice")
			}
			if err := checkPrivileges(); err != nil {
				return err
			}
			stopUI, err := f.startUI(cmd)
			if err != nil {
				return err
			}
			defer stopUI()
			res, err := agent.Run(cmd.Context(), args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f.options(cmd.ErrOrStderr()))
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
