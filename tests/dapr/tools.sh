#!/usr/bin/env bash
# Builds the Go tools the transport tests run, pinned, into target/tools/, once per machine:
# h2spec (the HTTP/2 conformance tool) and grpcurl (a grpc-go client with reflection). Go's
# module and build caches stay where Go keeps them. Prints `h2spec=/...` and `grpcurl=/...`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${CARGO_TARGET_DIR:-$root/target}/tools"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
H2SPEC=github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
GRPCURL=github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3

command -v go >/dev/null 2>&1 || { echo "tools.sh: no Go toolchain (go) on PATH" >&2; exit 1; }
build() {
  local name=$1 module=$2 stamp="$out/.$1.version"
  if [ -x "$out/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$module" ]; then
    echo "$name already built" >&2
  else
    echo "building $module" >&2
    (cd "$out" && GOBIN="$out" CGO_ENABLED=0 GOFLAGS=-trimpath go install "$module")
    echo "$module" >"$stamp"
  fi
  echo "$name=$out/$name"
}
build h2spec "$H2SPEC"
build grpcurl "$GRPCURL"
