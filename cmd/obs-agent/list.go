package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// listFlags are the flags of `obs-agent list`.
type listFlags struct {
	pid     int
	binary  string
	include []string
	exclude []string
	format  string
	all     bool
}

func newListCommand() *cobra.Command {
	f := &listFlags{}
	cmd := &cobra.Command{
		Use:   "list (--pid PID | --binary PATH) [-f PATTERN]... [-x PATTERN]...",
		Short: "List the functions of a Go binary and whether they can be traced",
		Long: `List the functions that the patterns select in a Go binary, or in the
binary of a running process, and whether each can be probed.

For each function it shows whether it can be probed (PROBE), how many probe
sites tracing it costs (SITES: its entry plus one per RET instruction), whether
its error result can be read (ERROR: yes, no, or unknown without DWARF), and a
NOTE: why it can't be probed (inlined at every call site, no RET instruction,
bytes that don't decode, assembly), or that calls at its inlined sites are not
seen. A summary line closes the list, with facts about the binary.

Patterns are globs over full Go symbol names: '*' matches any run of
characters and '?' one character; everything else is literal, so
'main.(*Server).*' and 'main.Map[*]' work as written. Without -f every
non-generated function is listed. Runtime and compiler-generated functions are
only listed when a pattern names their package ('runtime.*') or with --all.
A trailing '@RATE' on a pattern (the sample rate used by attach and run) is
accepted and ignored here.

list reads the binary only: it needs no root. With --pid it reads
/proc/PID/exe, which needs the same user as the process, or root.`,
		Example: `  obs-agent list --binary ./myservice
  obs-agent list --pid 4242 -f 'github.com/acme/api/*' -x '*.String'
  obs-agent list --binary ./myservice -f 'main.(*Server).*' --format json
  obs-agent list --binary ./myservice -f 'runtime.gopanic'
  obs-agent list --binary ./myservice --all`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("pid") {
				if err := pidRange().Check("pid", f.pid); err != nil {
					return err
				}
			}
			if err := patternsError(f.include, f.exclude); err != nil {
				return err
			}
			return runList(cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.pid, "pid", 0, "list the functions of the binary running as process `PID`")
	fl.StringVar(&f.binary, "binary", "", "list the functions of the Go executable at `PATH`")
	fl.StringArrayVarP(&f.include, "func", "f", nil, "include functions matching the glob `PATTERN` (repeatable; default all non-generated)")
	fl.StringArrayVarP(&f.exclude, "exclude", "x", nil, "leave out functions matching the glob `PATTERN` (repeatable)")
	fl.StringVar(&f.format, "format", "table", "output format: table or json")
	fl.BoolVar(&f.all, "all", false, "also list runtime and compiler-generated functions")
	cmd.MarkFlagsMutuallyExclusive("pid", "binary")
	cmd.MarkFlagsOneRequired("pid", "binary")
	return cmd
}

// listRow is one listed function, as printed and as JSON.
type listRow struct {
	Name      string `json:"name"`
	Probe     bool   `json:"probe"`
	Sites     int    `json:"sites"`                  // entry + RETs; 0 when not probeable
	ErrResult string `json:"error_result"`           // yes, no, unknown
	ErrSource string `json:"error_source,omitempty"` // what says so: dwarf, method type
	Inlined   int    `json:"inlined_sites"`          // -1 when unknown
	Generated bool   `json:"generated,omitempty"`    // runtime or compiler generated
	EntryOnly bool   `json:"entry_only,omitempty"`   // no RET: traced by its entry alone
	Reason    string `json:"reason,omitempty"`       // why not probeable
	Warning   string `json:"warning,omitempty"`      // e.g. calls at inlined sites are not seen
	Entry     string `json:"entry,omitempty"`        // hex vaddr
	Size      uint64 `json:"size_bytes,omitempty"`   // code bytes
	ErrIndex  *int   `json:"error_index,omitempty"`  // which result is the error
}

// listBinaryInfo is the binary facts of the summary.
type listBinaryInfo struct {
	Path       string `json:"path"`
	PID        int    `json:"pid,omitempty"`
	GoVersion  string `json:"go_version"`
	Arch       string `json:"arch"`
	PIE        bool   `json:"pie"`
	DWARF      bool   `json:"dwarf"`
	Stripped   bool   `json:"stripped"`
	GoidOffset uint64 `json:"goid_offset"`
	GoidSource string `json:"goid_offset_source"`
}

type listOutput struct {
	Binary    listBinaryInfo `json:"binary"`
	Functions []listRow      `json:"functions"`
	Summary   struct {
		Functions int `json:"functions"`
		Probeable int `json:"probeable"`
		Sites     int `json:"sites"`
	} `json:"summary"`
	Notes []string `json:"notes,omitempty"`
}

func runList(w io.Writer, f *listFlags) error {
	if f.format != "table" && f.format != "json" {
		return fmt.Errorf("list: --format %s: want table or json", validate.Quote(f.format))
	}
	path := f.binary
	if f.pid != 0 {
		p, err := agent.ProcessExe(f.pid)
		if err != nil {
			return fmt.Errorf("list: %w", err)
		}
		path = p
	}
	bin, err := symbols.OpenProgram(path)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	defer bin.Close()

	include := f.include
	if len(include) == 0 {
		include = []string{"*"}
	}
	opts := selector.Options{MaxProbes: -1, SampleRate: 1, Generated: f.all}
	sel, err := selector.Select(bin, include, f.exclude, opts)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}

	out := buildListOutput(bin, sel)
	out.Binary.PID = f.pid
	if f.format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return writeListTable(w, out)
}

func buildListOutput(bin *symbols.Binary, sel *selector.Selection) *listOutput {
	out := &listOutput{Binary: listBinaryInfo{
		Path:       bin.Path,
		GoVersion:  bin.GoVersion,
		Arch:       bin.Arch,
		PIE:        bin.PIE,
		DWARF:      bin.HasDWARF,
		Stripped:   !bin.HasSymtab,
		GoidOffset: bin.Layout.Goid,
		GoidSource: bin.LayoutSource,
	}}
	errResult := func(fn *symbols.Func) string {
		switch {
		case fn.ErrResult != nil:
			return "yes"
		case fn.ErrSource != "":
			return "no"
		}
		return "unknown"
	}
	rows := make([]listRow, 0, len(sel.Funcs)+len(sel.Skipped))
	for _, s := range sel.Funcs {
		fn := s.Func
		r := listRow{
			Name: fn.Name, Probe: true, Sites: 1 + len(fn.Rets), ErrResult: errResult(fn), ErrSource: fn.ErrSource,
			Inlined: fn.InlinedSites, Generated: fn.Generated,
			Entry: fmt.Sprintf("%#x", fn.Entry), Size: fn.End - fn.Entry,
		}
		if fn.ErrResult != nil {
			r.ErrIndex = &fn.ErrResult.Index
		}
		var warn []string
		if fn.EntryOnly {
			r.EntryOnly = true
			warn = append(warn, listEntryOnlyNote)
		}
		if fn.InlinedSites > 0 {
			warn = append(warn, fmt.Sprintf("calls at %d inlined %s are not seen", fn.InlinedSites, listPlural(fn.InlinedSites, "site", "sites")))
		}
		if fn.ErrSource == symbols.ErrSourceMethodType {
			warn = append(warn, "error result from the method's type descriptor")
		}
		r.Warning = strings.Join(warn, "; ")
		rows = append(rows, r)
		out.Summary.Probeable++
		out.Summary.Sites += r.Sites
	}
	for _, s := range sel.Skipped {
		r := listRow{Name: s.Name, Reason: s.Reason, ErrResult: "unknown", Inlined: -1}
		if fn := s.Func; fn != nil {
			r.ErrResult, r.ErrSource, r.Inlined, r.Generated = errResult(fn), fn.ErrSource, fn.InlinedSites, fn.Generated
			r.Entry, r.Size = fmt.Sprintf("%#x", fn.Entry), fn.End-fn.Entry
		}
		rows = append(rows, r)
	}
	slices.SortStableFunc(rows, func(a, b listRow) int { return strings.Compare(a.Name, b.Name) })
	out.Functions = rows
	out.Summary.Functions = len(rows)
	if !bin.HasDWARF {
		covered := 0
		for _, r := range rows {
			if r.ErrSource != "" {
				covered++
			}
		}
		out.Notes = append(out.Notes,
			"no DWARF (built with -ldflags=-w or -s -w): error results are located only for methods whose signature the type descriptors give ("+
				strconv.Itoa(covered)+" of the "+strconv.Itoa(len(rows))+" listed functions, ERROR yes/no); for other functions they can't be located (ERROR unknown), so their returned errors are not recorded (panics are still captured); and inlining can't be reported: functions inlined at every call site are missing from this list, and calls at inlined sites are not seen")
	}
	return out
}

func writeListTable(w io.Writer, out *listOutput) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tPROBE\tSITES\tERROR\tNOTE")
	shortened := false
	for _, r := range out.Functions {
		probe, sites, note := "yes", strconv.Itoa(r.Sites), r.Warning
		if !r.Probe {
			probe, sites, note = "no", "-", r.Reason
		}
		name := listShortName(r.Name)
		shortened = shortened || name != r.Name
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, probe, sites, r.ErrResult, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b := out.Binary
	goid := fmt.Sprintf("goid offset %d from %s", b.GoidOffset, listGoidSource(b.GoidSource))
	fmt.Fprintf(w, "\n%d %s, %d probeable, %d probe %s; %s: %s %s, PIE %s, DWARF %s, stripped %s, %s\n",
		out.Summary.Functions, listPlural(out.Summary.Functions, "function", "functions"),
		out.Summary.Probeable, out.Summary.Sites, listPlural(out.Summary.Sites, "site", "sites"),
		b.Path, b.GoVersion, b.Arch, listYesNo(b.PIE), listYesNo(b.DWARF), listYesNo(b.Stripped), goid)
	if shortened {
		fmt.Fprintln(w, "note: long type arguments are shortened to [...]; --format json shows full names")
	}
	for _, n := range out.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

// listEntryOnlyNote says how a function without a RET is traced.
const listEntryOnlyNote = "entry only (no RET): its call ends with the panic that leaves it, Goexit, or the process"

// listLongName is the length from which listShortName shortens a name.
const listLongName = 100

// listShortName keeps a table readable when a generic instantiation has long
// type arguments, such as a whole go.shape struct: from listLongName bytes
// on, the contents of each outermost [...] are elided.
func listShortName(name string) string {
	if len(name) < listLongName {
		return name
	}
	var b strings.Builder
	depth := 0
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '[':
			if depth == 0 {
				b.WriteString("[...")
			}
			depth++
		case c == ']' && depth > 0:
			depth--
			if depth == 0 {
				b.WriteByte(']')
			}
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func listGoidSource(s string) string {
	switch s {
	case "dwarf":
		return "DWARF"
	case "table":
		return "the Go version table"
	case "":
		return "unknown source"
	}
	return s
}

func listYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func listPlural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
