// Package symbols reads a Go ELF executable and says what can be probed and
// where.
//
// It owns everything the agent learns from the target file before attaching:
// the function table (from .gopclntab, so it works on binaries stripped with
// -s -w, PIE or not, including Go 1.26 pclntabs that no longer store
// textStart), the RET instruction sites of every function (linear-sweep
// disassembly, never guessing past an undecodable byte), the file offsets
// uprobes are attached at, the runtime layout the probes rely on (goid and
// stack inside runtime.g, runtime._panic; from DWARF, or from a table with
// one row per Go release, each proved against that release's DWARF 4 and 5
// by TestLayoutTable), where an `error` result lives at RET time
// (DWARF plus the Go internal register ABI; without DWARF, for methods, from
// their signatures in the type descriptors: typeerrs.go), inlining facts
// from DWARF, the itabs that name the dynamic types of returned errors
// (symbols, .itablink, Go 1.27 moduledata, or an itab's Type word), and the
// runtime type descriptors (types.go, typedesc.go: names, fields, elements,
// methods, signatures) that name the dynamic type of a panic value or of an
// itab, which are readable even in stripped binaries.
//
// Everything is computed eagerly by Open: when Open returns, every Func has
// its Rets, Probeable and Reason filled. The package holds no global mutable
// state; a *Binary is read-only after Open and safe for concurrent readers.
//
// Supported: Go 1.17+ on amd64 and Go 1.18+ on arm64 (register ABI). Only
// amd64 is tested against real binaries; arm64 paths (RET decoding, ABI
// register counts, layout table) are unit-tested only.
package symbols
