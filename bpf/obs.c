//go:build ignore

/* obs-agent's uprobe programs for Go functions: one object, built from the
 * headers beside this file, each owning one concern:
 *   obs.h        constants and records shared with Go (bpf2go -type)
 *   config.h     what user space sets: constants before load, the phase,
 *                generation and call ids while running
 *   maps.h       the maps (sized by user space)
 *   regs.h       the Go register ABI: g, SP, integer registers
 *   helpers.h    health counters, target filter, cookies, ring wakeups
 *   goroutine.h  per-goroutine state with cached goid and stack bounds
 *   records.h    aggregates and the records of the two rings
 *   frames.h     each goroutine's stack of open frames, closing dead ones
 *   errtext.h    a returned error's (or panic value's) memory, captured by
 *                per-type read plans from user space: error path only
 *   calls.h      obs_entry, obs_ret, obs_leaf on the traced functions
 *   runtime.h    hooks on newproc1, gopanic, copystack, goexit1 */

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "obs.h"
#include "config.h"
#include "calls.h"
#include "runtime.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keep the exported types in BTF, so bpf2go generates their Go twins. */
const struct call_event *_call_event __attribute__((unused));
const struct err_event *_err_event __attribute__((unused));
const enum obs_status *_obs_status __attribute__((unused));
const enum obs_err_kind *_obs_err_kind __attribute__((unused));
const enum obs_err_mode *_obs_err_mode __attribute__((unused));
const enum obs_phase *_obs_phase __attribute__((unused));
const enum obs_limits *_obs_limits __attribute__((unused));
const enum obs_gslot_mark *_obs_gslot_mark __attribute__((unused));

/* Empty programs on the same sites: the floor that overhead figures are
 * measured against. */
SEC("uprobe.multi")
int obs_empty(struct pt_regs *ctx)
{
	return 0;
}
