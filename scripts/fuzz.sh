#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for SECONDS each (default 60), seeded from the shared
# corpus, and prints one line per target: executions, corpus size, crashes.
#   scripts/fuzz.sh [SECONDS] [TARGET...]        e.g. scripts/fuzz.sh 600 stamp thumbnail
# Needs a nightly toolchain (cargo-fuzz builds with sanitizers) and cargo-fuzz (installed here
# if missing). Working corpora and crash artifacts live in $DOCSTORE_FUZZ_DIR
# (default ~/.cache/docstore-fuzz), never in the repo; a crash is reproduced with
#   cargo +nightly fuzz run TARGET --fuzz-dir fuzz ARTIFACT
# and fixed with a regression test beside the code it breaks.
# FUZZ_JOBS=N runs N targets at once (default 1).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
secs=${1:-60}
shift || true
corpus_src=${DOCSTORE_CORPUS:-$here/../shared/corpus}
work=${DOCSTORE_FUZZ_DIR:-$HOME/.cache/docstore-fuzz}
jobs=${FUZZ_JOBS:-1}
all=(envelope_open key_block event_decode config_parse pdf_preflight stamp thumbnail extract search_query)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

rustup toolchain list | grep -q '^nightly' || { echo "needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
scripts/build-deps.sh

seed() { # target dir
  local t=$1 d=$2
  mkdir -p "$d"
  [ -n "$(ls -A "$d")" ] && return 0
  case $t in
    pdf_preflight|stamp|extract) cp "$corpus_src"/*.pdf "$d"/ ;;
    thumbnail) cp "$corpus_src"/*.{pdf,jpg,png,gif,tif,tiff,webp} "$d"/ 2>/dev/null || true ;;
    event_decode) for f in docs/events.md; do
        # The JSON examples of the event spec, one per file.
        python3 - "$f" "$d" <<'EOF'
import re, sys, pathlib
text = pathlib.Path(sys.argv[1]).read_text()
for i, block in enumerate(re.findall(r"```json\n(.*?)```", text, re.S)):
    pathlib.Path(sys.argv[2], f"example-{i}.json").write_text(block)
EOF
      done ;;
    search_query) # a flags byte, then the text: the query language's forms
      printf '\000hemoglobina "hemograma completo"' >"$d/phrase"
      printf '\001glicemia OR colesterol -ultrassonografia' >"$d/boolean"
      printf '\002(hemograma AND (glicemia OR patient:pac-1)) kind:report' >"$d/nested"
      printf '\000created:[2025-01-01T00:00:00Z TO *] exam:IN [exm-1 exm-2]' >"$d/range" ;;
    config_parse)
      printf 'blobs = "s3://clinic/prod"\nmetadata = "dynamodb://t"\nkeys = "kms://alias/k"\n' >"$d/prod.toml"
      printf 'metadata = "postgres://u@127.0.0.1:5432/db"\naudit = "file:///var/log/a.jsonl"\n' >"$d/pg.toml"
      printf 'kafka://127.0.0.1:9092?partitions=6&prefix=x&session_timeout_ms=6000' >"$d/bus.url" ;;
    *) : ;; # the envelope targets start from nothing and find the format themselves
  esac
}

echo "building fuzz targets (nightly, address sanitizer)"
cargo +nightly fuzz build --fuzz-dir fuzz -O

run() { # target
  local t=$1 dir="$work/corpus/$1" art="$work/artifacts/$1/" log="$work/logs/$1.log"
  mkdir -p "$art" "$(dirname "$log")"
  seed "$t" "$dir"
  # 2 GiB: the sanitizer's shadow memory on top of the stages' own 512 MiB bound.
  local status=0
  cargo +nightly fuzz run --fuzz-dir fuzz -O "$t" "$dir" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -artifact_prefix="$art" \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  local execs crashes
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  crashes=$(find "$art" -type f | wc -l)
  # Dependency panics the stage caught (fuzz_targets/dependency_panics.rs): not crashes, but
  # upstream bugs worth a report; their distinct locations are listed.
  local caught where
  caught=$(grep -c '^caught dependency panic at ' "$log" || true)
  where=$(grep -o '^caught dependency panic at .*' "$log" | sed 's/.*registry\/src\/[^/]*\///' | sort -u | paste -sd' ' || true)
  printf '%-14s %6ss  %12s execs  %6s corpus  %s crash(es)  exit %s  %s caught dependency panic(s) %s\n' \
    "$t" "$secs" "$execs" "$(ls "$dir" | wc -l)" "$crashes" "$status" "${caught:-0}" "$where"
}

export -f run seed
export secs work corpus_src
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run {}'
