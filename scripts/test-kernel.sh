#!/usr/bin/env bash
# Boot one of Debian's kernels under qemu and run the probe tests inside it,
# as root, on that kernel and CPU architecture.
#
# Usage: scripts/test-kernel.sh KERNEL [ARCH]
#   KERNEL  6.1 (Debian 12's own kernel: no uprobe_multi) or 6.12 (the LTS
#           line Debian 12 ships as an update; uprobe_multi with a working
#           pid filter)
#   ARCH    amd64 (default) or arm64 (emulated: qemu-system-aarch64 -M virt)
#
# Environment:
#   KERNEL_CACHE  where kernel and busybox .debs are kept (default .cache/kernels)
#   ACCEL         auto (default: KVM if a probe boot shows it works, else
#                 TCG), kvm or tcg
#   GUEST_RUN     -test.run pattern for the agent tests (default: the reduced
#                 set below)
#   GUEST_COUNT   -test.count for the agent tests (default 1)
#   GUEST_BENCH   1: also time attaching and detaching 5,000 sites
#                 (BenchmarkAttachDetach5000)
#   GUEST_TIMEOUT seconds before the guest is killed (default 1500)
#
# Nothing is installed into the guest: the kernel comes from the Debian
# package, the user space is busybox-static of the guest's architecture, and
# the test binaries and testdata programs are built here for that
# architecture and packed into the initramfs (the guest has no Go toolchain,
# and compiling under emulation would take longer than the tests). The
# kernel's own modules are not needed: BPF, uprobes, perf events, tracefs and
# the serial console are built into Debian's kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole script is one block, which bash parses before running any of
# it: editing the file during a 20-minute run cannot derail the run.
{
t0=$(date +%s)

die() { echo "test-kernel: $*" >&2; exit 2; }

kver=${1:-}
arch=${2:-amd64}
case $kver in
6.1) pkgre="^linux-image-6\.1\.0-[0-9]+-$arch\$" ;;
6.12) pkgre="^linux-image-6\.12\.[0-9]+\+deb[0-9]+-$arch\$" ;;
*) die "KERNEL must be 6.1 or 6.12 (6.18 is the host's own: run 'make test'), got '${kver}'" ;;
esac
case $arch in
amd64)
	qemu="qemu-system-x86_64"
	qemu_pkg="qemu-system-x86"
	console=ttyS0
	;;
arm64)
	qemu="qemu-system-aarch64"
	qemu_pkg="qemu-system-arm"
	console=ttyAMA0
	;;
*) die "ARCH must be amd64 or arm64, got '$arch'" ;;
esac
command -v "$qemu" >/dev/null || die "$qemu not found (apt-get install $qemu_pkg)"
for tool in cpio dpkg-deb apt-get timeout; do
	command -v "$tool" >/dev/null || die "$tool not found"
done

cache=${KERNEL_CACHE:-$PWD/.cache/kernels}
accel=${ACCEL:-auto}
timeout_s=${GUEST_TIMEOUT:-1500}
# The tests time out first, so that a hang prints every goroutine's stack
# before qemu is killed.
test_timeout=$((timeout_s > 240 ? timeout_s - 120 : timeout_s / 2))
mkdir -p "$cache"

# The reduced guest set: the attach path chosen from what the kernel can do,
# attach and run with exact call trees and parents
# (stripped too), error returns, recovered and unrecovered panics (the
# error lane of the queue), sampling that must still keep every error chain,
# two processes of one binary (the pid filters), calls open at exit, and a
# detach that leaves the target running unchanged.
default_run='^(TestKernelPathChosen|TestRunTree|TestAttachTree|TestErrorReturns|TestRecoveredPanics|TestUnrecoveredPanic|TestSamplingKeepsErrorChains|TestTwoProcessesSameBinary|TestExitWhileOpen|TestDetachLeavesTargetRunning)$/^(calltree|calltree-stripped|errs|errs-stripped|kernel-pid-filter|bpf-tgid-filter-only)$'
run=${GUEST_RUN:-$default_run}
# Every testdata build the set above asks testutil.BuildProgram for.
prebuilt=(calltree calltree-stripped errs errs-stripped)

# newest GLOB: the file name in the cache matching GLOB with the highest
# version, or nothing.
newest() { find "$cache" -maxdepth 1 -name "$1" -printf '%f\n' | sort -V | tail -1; }

# apt_fetch PREFIX REGEX GLOB: the newest cached .deb matching GLOB, else
# the newest package whose name starts with PREFIX and matches REGEX,
# downloaded for $arch into the cache.
apt_fetch() {
	local prefix=$1 re=$2 glob=$3 have name
	have=$(newest "$glob")
	if [[ -n $have ]]; then
		echo "$cache/$have"
		return
	fi
	if [[ $arch != "$(dpkg --print-architecture)" ]] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
		[[ $(id -u) == 0 ]] || die "Debian's $arch packages need 'dpkg --add-architecture $arch && apt-get update' (as root)"
		dpkg --add-architecture "$arch"
		apt-get update -qq
	fi
	name=$(apt-cache pkgnames "$prefix" | grep -E "$re" | sort -V | tail -1) || true
	if [[ -z $name ]]; then
		apt-get update -qq
		name=$(apt-cache pkgnames "$prefix" | grep -E "$re" | sort -V | tail -1) || true
	fi
	[[ -n $name ]] || die "no package matching $re in the apt sources"
	# As root, apt would drop to the _apt user, who cannot write the cache.
	(cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "$name:$arch" >&2) || die "apt-get download $name:$arch failed"
	have=$(newest "$glob")
	[[ -n $have ]] || die "apt-get download $name:$arch left no $glob in $cache"
	echo "$cache/$have"
}

case $kver in
6.1) kglob="linux-image-6.1.0-*-${arch}_*_${arch}.deb" ;;
6.12) kglob="linux-image-6.12.*-${arch}_*_${arch}.deb" ;;
esac
kdeb=$(apt_fetch "linux-image-$kver" "$pkgre" "$kglob")
bdeb=$(apt_fetch busybox-static "^busybox-static\$" "busybox-static_*_${arch}.deb")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
kernel=$(ls "$work"/boot/vmlinuz-*)
dpkg-deb --fsys-tarfile "$bdeb" | tar -x -C "$work" ./bin/busybox

# Build the guest's programs on the host for $arch.
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,t/prebuilt}
cp "$work/bin/busybox" "$root/bin/busybox"
export GOARCH=$arch CGO_ENABLED=0
echo "== building the test binaries for linux/$arch"
go test -c -o "$root/t/agent.test" ./internal/agent
go test -c -o "$root/t/kernel.test" ./internal/kernel
go build -o "$root/t/obs-agent" ./cmd/obs-agent
if [[ ${GUEST_BENCH:-0} == 1 ]]; then
	go test -c -o "$root/t/uprobe.test" ./internal/uprobe
	prebuilt+=(manyfuncs)
fi
for b in "${prebuilt[@]}"; do
	prog=${b%%-*}
	flags=()
	if [[ $b == *-stripped ]]; then flags+=("-ldflags=-s -w"); fi
	(cd "testdata/$prog" && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod go build "${flags[@]}" -o "$root/t/prebuilt/$b" .)
done
unset GOARCH CGO_ENABLED

# The guest's init: mount what BPF and uprobes need, say where we are, run
# the tests, report their exit status on the console, power off.
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin TMPDIR=/tmp HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
echo "guest: uname -r \$(uname -r)"
echo "guest: uname -m \$(uname -m)"
echo "guest: \$(nproc) CPUs, \$(awk '/MemTotal/ {print \$2 / 1024 " MiB"}' /proc/meminfo)"
/t/obs-agent version
cd /t
./kernel.test -test.v -test.count=1 || kfail=1
start=\$(cut -d. -f1 /proc/uptime)
OBS_AGENT_PREBUILT=/t/prebuilt ./agent.test -test.v -test.count=${GUEST_COUNT:-1} -test.timeout=${test_timeout}s -test.run '${run}'
rc=\$?
[ -z "\$kfail" ] || rc=1
echo "guest: agent tests took \$(( \$(cut -d. -f1 /proc/uptime) - start )) s"
if [ -x /t/uprobe.test ]; then
	OBS_AGENT_PREBUILT=/t/prebuilt ./uprobe.test -test.run '^\$' -test.bench BenchmarkAttachDetach5000 -test.benchtime 1x -test.timeout=${test_timeout}s || rc=1
fi
echo "OBS-GUEST-EXIT \$rc"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) >"$work/initrd"

# qemu_boot ACCEL INITRD SECONDS: boot the kernel, console on stdout.
qemu_boot() {
	local acc=$1 initrd=$2 secs=$3 args
	args=(-m 2048 -smp 2 -nographic -no-reboot -kernel "$kernel" -initrd "$initrd"
		-append "console=$console panic=-1 quiet loglevel=3")
	if [[ $arch == arm64 ]]; then
		# pauth-impdef: qemu's cheap pointer-authentication hash instead of
		# the architected QARMA, which is slow to emulate.
		args+=(-M virt -cpu "max,pauth-impdef=on" -accel tcg)
	elif [[ $acc == kvm ]]; then
		args+=(-accel kvm -cpu host)
	else
		args+=(-accel tcg -cpu max)
	fi
	timeout --foreground -k 10 "$secs" "$qemu" "${args[@]}" </dev/null
}

# KVM: nested KVM on some hosts creates the VM but the guest hangs right
# after the real-mode setup. Use it only when a tiny guest really boots;
# the verdict is kept for this host boot.
if [[ $arch == amd64 && $accel == auto ]]; then
	accel=tcg
	verdict=$cache/kvm-$(cat /proc/sys/kernel/random/boot_id)-$kver
	if [[ -f $verdict ]]; then
		accel=$(cat "$verdict")
	elif [[ -w /dev/kvm ]]; then
		probe=$work/probe
		mkdir -p "$probe/bin"
		cp "$work/bin/busybox" "$probe/bin/"
		printf '#!/bin/busybox sh\n/bin/busybox echo OBS-KVM-OK\n/bin/busybox poweroff -f\n' >"$probe/init"
		chmod +x "$probe/init"
		(cd "$probe" && find . | cpio -o -H newc --quiet) >"$work/probe.cpio"
		if qemu_boot kvm "$work/probe.cpio" 30 2>&1 | grep -q OBS-KVM-OK; then
			accel=kvm
		fi
		echo "$accel" >"$verdict"
	fi
	echo "== KVM probe: using $accel"
elif [[ $arch == arm64 ]]; then
	accel=tcg
fi

echo "== booting $(basename "$kdeb") under $qemu ($accel)"
log=$work/console.log
start=$(date +%s)
set +e
qemu_boot "$accel" "$work/initrd" "$timeout_s" 2>&1 | tee "$log"
set -e
secs=$(($(date +%s) - start))
rc=$(sed -n 's/^OBS-GUEST-EXIT \([0-9]*\).*/\1/p' "$log" | tail -1)
echo "== summary: Debian $(basename "$kdeb" .deb) on $arch ($accel)"
grep -oE 'guest: uname -[rm] .*' "$log" | tr -d '\r'
echo "tests: $(grep -cE '^ *--- PASS' "$log") passed, $(grep -cE '^ *--- FAIL' "$log") failed, $(grep -cE '^ *--- SKIP' "$log") skipped (top-level and subtests)"
grep -E '^ *--- (FAIL|SKIP)' "$log" | tr -d '\r' || true
echo "guest wall time: ${secs} s (boot to power-off); test-kernel total: $(($(date +%s) - t0)) s (download, build, boot, tests)"
if [[ -z $rc ]]; then
	echo "test-kernel: the guest did not report an exit status (timeout after ${timeout_s} s, or a kernel panic)" >&2
	exit 1
fi
exit "$rc"
}
