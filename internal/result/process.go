package result

// Process is one traced process: a session of `attach --pid` or `run`
// traces one, a session of `attach --exe` every process of its file.
type Process struct {
	Session uint64
	PID     uint32 // host pid
	NSPID   uint32 // pid in its own pid namespace when that differs, else 0
	Binary  string
	BuildID string
	Start   int64 // Unix ns
	End     int64 // Unix ns; 0 while it runs
	// ExitReason says how its tracing ended: "exited", or "running when
	// the session ended".
	ExitReason string
}
