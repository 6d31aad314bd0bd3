package main

import "github.com/spf13/cobra"

// newAttachCommand is a placeholder until the command lands.
func newAttachCommand() *cobra.Command {
	return &cobra.Command{Use: "attach", Short: "(not built yet)"}
}
