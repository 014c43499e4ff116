#!/usr/bin/env bash
# The main job on the embedded default, no servers: `docstore demo` generates synthetic Portuguese
# lab reports and exam images, uploads them (versioned, envelope-encrypted), stamps, thumbnails,
# extracts and indexes them through the in-process bus, and searches them; then a few more
# searches and reads show the store at work.
# Usage: scripts/demo.sh [REPORTS]   (default 60; the store and index are left in ./docstore-demo)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
reports=${1:-60}
"$here/scripts/build-deps.sh"
cargo build --release -q -p docstore-cli --manifest-path "$here/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$here/target}/release/docstore
data=${DOCSTORE_DEMO_DIR:-$PWD/docstore-demo}
rm -rf "$data"
export DOCSTORE_DATA_DIR=$data DOCSTORE_ACTOR=staff:demo
say() { printf '\n$ docstore %s\n' "$*"; "$bin" "$@"; }

say demo --reports "$reports" --images $((reports / 5))
say search '"hemoglobina glicada"' --per-page 3
say search 'creatinina' --kind report --sort newest --per-page 3
doc=$("$bin" --json search 'lipidograma' --per-page 1 | sed -n 's/.*"document_id": "\(.*\)".*/\1/p' | head -1)
say versions "$doc"
out=$(mktemp -d)/laudo.pdf
say get "$doc" -o "$out"
head -c 8 "$out"; echo "  ← the report, decrypted ($(stat -c %s "$out") bytes)"
if grep -rqaF "%PDF-1." "$data"/objects; then echo "plaintext found at rest!" >&2; exit 1; fi
echo "no plaintext at rest: the objects folder holds only envelopes (originals and renditions)"
say audit --limit 5
