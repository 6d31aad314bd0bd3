package main

import "github.com/spf13/cobra"

// newVersionCommand is a placeholder until the command lands.
func newVersionCommand() *cobra.Command {
	return &cobra.Command{Use: "version", Short: "(not built yet)"}
}
