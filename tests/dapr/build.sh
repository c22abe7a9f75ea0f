#!/usr/bin/env bash
# Builds an unmodified daprd from Dapr's own Go module (tests/dapr/go.mod pins the release) into
# target/dapr/bin/, once: when the binary there already reports the pinned version, nothing is
# built. Go's module and build caches stay where Go keeps them (`go env GOMODCACHE GOCACHE`), so
# a fresh clone on the same machine reuses them.
#
# Also lays out a Dapr CLI runtime root, target/dapr/runtime/.dapr/{bin/daprd,config.yaml}, the
# shape `dapr run --runtime-path target/dapr/runtime` looks for. The Dapr CLI itself
# (github.com/dapr/cli) is built too when the Go module proxy serves it; when it does not, this
# says so and goes on (daprd is what the tests need).
#
# Prints the absolute paths of what it has, as `daprd=/...` and `dapr=/...` lines.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${CARGO_TARGET_DIR:-$root/target}/dapr"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
DAPR_VERSION=1.18.1
CLI_VERSION=1.18.0

command -v go >/dev/null 2>&1 || { echo "build.sh: no Go toolchain (go) on PATH" >&2; exit 1; }

daprd="$out/bin/daprd"
if [ -x "$daprd" ] && "$daprd" --version 2>/dev/null | grep -qx "$DAPR_VERSION"; then
  echo "daprd $DAPR_VERSION already built" >&2
else
  echo "building daprd $DAPR_VERSION (first build on a machine: module download and a long compile)" >&2
  mkdir -p "$out/bin"
  (cd "$here" && CGO_ENABLED=0 go build -tags stablecomponents -trimpath \
      -ldflags "-X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION" \
      -o "$daprd.tmp" ./daprd)
  mv "$daprd.tmp" "$daprd"
fi

# The runtime root `dapr run --runtime-path` expects, with a Configuration that keeps daprd on
# loopback: the kubernetes name resolver instead of mDNS (mDNS multicasts off the machine).
runtime="$out/runtime/.dapr"
mkdir -p "$runtime/bin"
ln -sf "$daprd" "$runtime/bin/daprd"
cp "$here/config.yaml" "$runtime/config.yaml"

dapr_cli="$out/bin/dapr"
if [ -x "$dapr_cli" ]; then
  :
elif GOBIN="$out/cli" go install "github.com/dapr/cli@v$CLI_VERSION" >"$out/cli-build.log" 2>&1; then
  mv "$out/cli/cli" "$dapr_cli"
else
  echo "build.sh: the Dapr CLI github.com/dapr/cli@v$CLI_VERSION could not be built:" >&2
  tail -n 3 "$out/cli-build.log" >&2
  dapr_cli=""
fi

echo "daprd=$daprd"
[ -z "$dapr_cli" ] || echo "dapr=$dapr_cli"
echo "runtime=$out/runtime"
