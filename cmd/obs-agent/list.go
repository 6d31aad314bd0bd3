package main

import "github.com/spf13/cobra"

// newListCommand is a placeholder until the command lands.
func newListCommand() *cobra.Command {
	return &cobra.Command{Use: "list", Short: "(not built yet)"}
}
