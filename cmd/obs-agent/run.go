package main

import "github.com/spf13/cobra"

// newRunCommand is a placeholder until the command lands.
func newRunCommand() *cobra.Command {
	return &cobra.Command{Use: "run", Short: "(not built yet)"}
}
