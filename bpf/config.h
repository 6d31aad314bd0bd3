/* What user space sets: read-only constants fixed before the programs load
 * (CollectionSpec.Variables in internal/uprobe; the verifier then prunes
 * the branches they rule out), and the few globals it writes while the
 * programs run. Map sizes are set from user space too (maps.h). */
#ifndef OBS_CONFIG_H
#define OBS_CONFIG_H

#include "obs.h"

/* Offset of goid in runtime.g, from DWARF or the version table. */
volatile const __u64 goid_offset = 152;
/* ABI integer register of runtime.newproc1's callergp argument. */
volatile const __u32 newproc_callergp_reg = 1;
/* The traced process; 0 traces whatever the links' pid filter lets in. */
volatile const __u32 target_tgid = 0;
/* 1: the programs check the tgid themselves, because the kernel's pid
 * filter is not in force (uprobe_multi before Linux 6.10 admits only the
 * thread whose id is the pid, so user space attaches without it). 0: every
 * hit is the target's, and the helper call that reads the tgid is saved. */
volatile const __u32 check_tgid = 1;
/* The traced cgroup v2 (its id, the inode number of its directory) and its
 * level (depth below the root), or 0: any cgroup. A process is the
 * target's when its cgroup's ancestor at that level is the cgroup, so the
 * processes of child cgroups made later are too. */
volatile const __u64 target_cgroup = 0;
volatile const __u32 target_cgroup_level = 0;
/* 1: the traced file is position independent and traced in every process
 * that maps it (a file target), each at its own load bias: the entries
 * note each process's bias (pie_bias), and the error and panic snapshots
 * look their types up by static address. 0: the read plans are keyed by
 * run-time address (a non-PIE file, or one process of a PIE file). */
volatile const __u32 pie_file = 0;
/* A record wakes the ring's reader once this CPU has written this many
 * since it last did: a wakeup costs the traced thread microseconds, and the
 * reader polls anyway (internal/agent). User space derives them from the
 * ring sizes. */
volatile const __u32 ok_wake_records = 16384;
volatile const __u32 err_wake_records = 256;
/* Slots of the goroutine table (maps.h) less one; 0: the table is off,
 * as it is when several processes are traced at once (it is keyed by g
 * alone). */
volatile const __u32 gslot_mask = 0;

/* Written by user space while the programs run. */

/* enum obs_phase: whether entries may open frames. */
__u32 phase = OBS_PHASE_ARMING;

/* Site generations. Function sites are attached with cookie
 * (generation << 32 | function id), and a hit counts only when its
 * generation is accepted. gens holds the newest accepted generation in its
 * low half and the oldest in its high half: one 64-bit word, so a probe
 * reads both at once. To change the sites in place (pause or resume
 * functions, add or remove some) user space attaches generation N+1 beside
 * N, accepts both (N+1 | N << 32), detaches N (closing a link waits for the
 * handlers running on it), then accepts N+1 alone. A trap on a site of
 * both generations runs both programs meanwhile: site_func (helpers.h)
 * handles it once. */
__u64 gens = 0;

/* Call ids: user space starts them at session<<40 so they are unique in the
 * store. Every entry on every CPU adds to it atomically, so it has a section
 * (a map) of its own: in .data it would share a cache line with the
 * read-mostly globals above, and each entry would evict that line from the
 * other CPUs. */
__u64 next_id SEC(".data.ids") = 1;

#endif
