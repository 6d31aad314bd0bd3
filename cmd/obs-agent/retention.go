package main

import "github.com/spf13/cobra"

// newRetentionCommand is a placeholder until the command lands.
func newRetentionCommand() *cobra.Command {
	return &cobra.Command{Use: "retention", Short: "(not built yet)"}
}
