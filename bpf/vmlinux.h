/* Trimmed kernel types for obs-agent's BPF programs. The full vmlinux.h is
 * megabytes; these programs need only the integer types, the BPF constants
 * and the register file of each architecture, so each architecture has a
 * small hand-written header and this file picks one. */
#ifndef OBS_VMLINUX_H
#define OBS_VMLINUX_H

#if defined(__TARGET_ARCH_x86)
#include "vmlinux_x86.h"
#elif defined(__TARGET_ARCH_arm64)
#include "vmlinux_arm64.h"
#else
#error "obs-agent BPF: unsupported target architecture (want x86 or arm64)"
#endif

#endif
