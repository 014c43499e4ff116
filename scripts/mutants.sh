#!/usr/bin/env bash
# Mutation testing with cargo-mutants on the modules whose tests decide whether a clinic's data is
# safe: the envelope, the store, the domain rules and the join, the key providers, the worker
# runtime and relay, and the access policy. Each module runs against the tests that exercise it
# (not the whole suite: a mutant costs one rebuild of its crate and one run of those tests).
# Not part of CI. Results go to target/mutants/<module>/ (cargo-mutants' outcomes.json and the
# caught.txt, missed.txt, timeout.txt and unviable.txt lists); the summary line per module is
# what docs/mutants.md records.
#
#   scripts/mutants.sh                 # every module below (hours on 2 cores)
#   scripts/mutants.sh rules join      # some of them, by the names below
#   MUTANTS_ITERATE=1 scripts/mutants.sh keys   # again, only what the last run missed
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
# Its own target directory: the mutated builds must not evict the everyday build's artifacts.
export CARGO_TARGET_DIR=${MUTANTS_TARGET_DIR:-$HOME/.cache/docstore-mutants}
export DOCSTORE_CORPUS=${DOCSTORE_CORPUS:-$here/../shared/corpus}

# name | package | file | features | tests (cargo test target selection)
modules=(
  "rules|docstore|crates/docstore/src/meta/rules.rs|conformance|--lib --test conformance_embedded"
  "join|docstore|crates/docstore/src/meta/join.rs|conformance|--lib --test conformance_embedded"
  "sql|docstore|crates/docstore/src/meta/sql.rs|conformance|--lib --test conformance_embedded"
  "envelope|docstore|crates/docstore/src/envelope.rs|conformance|--lib --test envelope_vectors --test tamper"
  "store|docstore|crates/docstore/src/store.rs|conformance|--lib --test conformance_embedded --test tamper --test builder --test store_edges --test range_cap --test read_audit --test gc_renditions --test open_records"
  "keys|docstore|crates/docstore/src/keys/mod.rs|conformance|--lib --test conformance_embedded"
  "keyring|docstore|crates/docstore/src/keys/keyring.rs|conformance|--lib --test conformance_embedded"
  "key-cache|docstore|crates/docstore/src/keys/cache.rs|conformance|--lib --test conformance_embedded"
  "runtime|docstore-pipeline|crates/pipeline/src/runtime.rs||--lib --test runtime"
  "relay|docstore-pipeline|crates/pipeline/src/relay.rs||--lib --test relay"
  "policy|docstore-server|crates/server/src/policy.rs||--lib --test access"
)

want=("$@")
for m in "${modules[@]}"; do
  IFS='|' read -r name package file features tests <<<"$m"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " =~ " $name " ]]; then continue; fi
  out=target/mutants/$name
  mkdir -p "$out"
  args=(--package "$package" --file "$file" --output "$out" --timeout-multiplier 3 --no-shuffle)
  [ -n "$features" ] && args+=(--features "$features")
  [ -n "${MUTANTS_ITERATE:-}" ] && args+=(--iterate)
  for t in $tests; do args+=(--cargo-test-arg="$t"); done
  echo "== $name ($file)" >&2
  # cargo-mutants exits non-zero when a mutant is missed; the lists say which.
  cargo mutants "${args[@]}" >"$out/log.txt" 2>&1 || true
  dir=$out/mutants.out
  count() { local n; n=$(grep -c . "$dir/$1.txt" 2>/dev/null || true); echo "${n:-0}"; }
  echo "$name: caught $(count caught), missed $(count missed), timeout $(count timeout), unviable $(count unviable)"
done
