package main

import "github.com/spf13/cobra"

// newQueryCommand is a placeholder until the command lands.
func newQueryCommand() *cobra.Command {
	return &cobra.Command{Use: "query", Short: "(not built yet)"}
}
