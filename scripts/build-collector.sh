#!/usr/bin/env bash
# Builds the OpenTelemetry Collector that the end-to-end OTLP tests run
# against, with the official builder (ocb) from the Go module proxy, from
# testdata/collector/builder-config.yaml: the core OTLP receiver and the
# file exporter. Prints the binary's path on stdout (progress goes to
# stderr), so a caller can do OBS_OTELCOL="$(scripts/build-collector.sh)".
#
# The binary is cached in OBS_COLLECTOR_CACHE (default
# ~/.cache/obs-agent/collector) under the hash of the manifest, the builder
# version and the Go version: an unchanged manifest is not rebuilt. The
# build reuses the usual GOMODCACHE and GOCACHE.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
# The builder's release matches the modules the manifest pins.
BUILDER_VERSION=v0.161.0
MANIFEST=testdata/collector/builder-config.yaml
NAME=otelcol-obs-agent-test
CACHE=${OBS_COLLECTOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/obs-agent/collector}

key=$({ cat "$MANIFEST"; echo "$BUILDER_VERSION"; "$GO" env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-16)
dir=$CACHE/$key
bin=$dir/$NAME/$NAME
if [[ -x $bin ]]; then
	echo "collector: cached $bin" >&2
	echo "$bin"
	exit 0
fi

start=$(date +%s)
mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "collector: building $NAME with ocb $BUILDER_VERSION into $dir (a few minutes)" >&2
# The builder is a Go module like any other: installed into the build dir,
# not onto the PATH.
GOBIN=$work/bin "$GO" install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" >&2
cp "$MANIFEST" "$work/builder-config.yaml"
# output_path is relative: build inside the work dir. (The builder links
# with -s -w by default: no symbol tables, a shorter link.)
(cd "$work" && ./bin/builder --config builder-config.yaml) >&2
[[ -x $work/$NAME/$NAME ]] || { echo "collector: the builder made no $NAME" >&2; exit 1; }
# Keep the sources and go.mod the builder generated beside the binary, to
# read which versions went in; then publish atomically.
rm -rf "${work:?}/bin"
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
echo "collector: built $bin in $(($(date +%s) - start)) s" >&2
echo "$bin"
