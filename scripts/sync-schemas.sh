#!/bin/sh
# Re-copy the OCI image-spec JSON schemas into the package, byte for byte.
#
# Source: ../shared/fixtures/image-spec/schema (opencontainers/image-spec @13cff54, Apache-2.0;
# see layouttool/schemas/NOTICE). Run from anywhere; paths are relative to the repository root.
# tests/test_schema.py fails if the packaged copies drift from the shared ones.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-"$root/../shared/fixtures/image-spec/schema"}
dst="$root/layouttool/schemas"

if [ ! -d "$src" ]; then
    echo "sync-schemas: source directory $src not found (pass it as the first argument)" >&2
    exit 1
fi

set -- "$src"/*.json
if [ ! -e "$1" ]; then
    echo "sync-schemas: no *.json in $src" >&2
    exit 1
fi

# Drop schemas that upstream no longer ships, then copy the current set.
for f in "$dst"/*.json; do
    [ -e "$f" ] || continue
    [ -e "$src/$(basename "$f")" ] || rm -- "$f"
done
for f in "$@"; do
    cp -- "$f" "$dst/$(basename "$f")"
done
echo "sync-schemas: copied $# schemas from $src to $dst"
