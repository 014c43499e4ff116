#!/usr/bin/env bash
# Our CLI next to the peers issue 7 names, on the same inputs, in one run; prints a table of
# ratios (ours / peer: time, lower is better) with the targets, and writes it with the date and
# the machine to docs/benchmarks/peers-<date>.md.
#   envelope   docstore put / get (embedded store)      vs age -e / age -d        (256 MiB file)
#   stages     docstore stamp/thumbnail/extract         vs qpdf --overlay, vipsthumbnail,
#                                                          pdftoppm -scale-to 256, pdftotext
#              (criterion, whole process vs whole process: scripts/bench-stages.sh)
#   search     tantivy (docstore)                       vs PostgreSQL FTS 'portuguese' (from the
#              search bench's JSON at DOCSTORE_SEARCH_DOCS, run here when PEERS_SEARCH=1)
#   day        docstore load (embedded, whole pipeline) vs a shell pipeline of the peers over the
#              same exported files (qpdf, pdftoppm, pdftotext, vipsthumbnail, age; 2 at a time)
# Usage: scripts/peers.sh [EXAMS]   (default 1000; PEERS_SIZE_MB=256)
#   PEERS_SEARCH=1 runs the search bench (else its last results are read); PEERS_STAGES=0 reads the
#   stage benches' last results instead of running them.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
exams=${1:-1000}
size_mb=${PEERS_SIZE_MB:-256}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/docstore-target}
export DOCSTORE_CORPUS=${DOCSTORE_CORPUS:-$here/../shared/corpus}
scripts/build-deps.sh --test
need=()
command -v age >/dev/null || need+=(age)
command -v hyperfine >/dev/null || need+=(hyperfine)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
cargo build --release -q -p docstore-cli --locked
bin=$CARGO_TARGET_DIR/release/docstore
work=$(mktemp -d /tmp/docstore-peers.XXXXXX)
trap 'rm -rf "$work"' EXIT
rows=$work/rows.tsv
: >"$rows"
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$rows"; } # what ours_s peer peer_s target note

echo "== envelope: ${size_mb} MiB, docstore put/get vs age" >&2
head -c $((size_mb << 20)) /dev/urandom >"$work/big.bin"
export DOCSTORE_DATA_DIR=$work/store
"$bin" init >/dev/null 2>&1
age-keygen -o "$work/age.key" 2>/dev/null
recipient=$(grep -m1 -o 'age1[0-9a-z]*' "$work/age.key")
age -r "$recipient" -o "$work/big.age" "$work/big.bin"
id=$("$bin" --json put "$work/big.bin" --patient p --exam e | python3 -c 'import json,sys; print(json.load(sys.stdin)["document_id"])')
hyperfine -N -w 1 -r 5 --export-json "$work/env.json" \
  -n "docstore put" "$bin put $work/big.bin --patient p --exam e --document $id" \
  -n "age -e" "age -r $recipient -o $work/out.age $work/big.bin" \
  -n "docstore get" "$bin get $id -o $work/out.bin" \
  -n "age -d" "age -d -i $work/age.key -o $work/out.bin $work/big.age" >/dev/null
python3 - "$work/env.json" >>"$rows" <<'PY'
import json, sys
m = {r["command"]: r["mean"] for r in json.load(open(sys.argv[1]))["results"]}
print(f"envelope encrypt (put)\t{m['docstore put']:.3f}\tage -e\t{m['age -e']:.3f}\t≤ 0.50×\twhole process; put also hashes and commits")
print(f"envelope decrypt (get)\t{m['docstore get']:.3f}\tage -d\t{m['age -d']:.3f}\t≤ 0.50×\twhole process; get verifies every frame")
PY

echo "== stages: criterion, scripts/bench-stages.sh" >&2
if [ "${PEERS_STAGES:-1}" = 1 ]; then
  scripts/bench-stages.sh --warm-up-time 1 --measurement-time 3 >"$work/stages.md"
else
  scripts/bench-stages.sh --table-only >"$work/stages.md"
fi
python3 - "$work/stages.md" >>"$rows" <<'PY'
import sys
targets = {("stamp", "qpdf --overlay"): "≤ 0.50×", ("thumbnail", "vipsthumbnail"): "≤ 1.00×",
           ("thumbnail", "pdftoppm -scale-to 256"): "≤ 0.30×"}
for line in open(sys.argv[1]):
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    if len(c) != 7 or c[0] in ("stage", "---") or c[3] in ("–", ""):
        continue
    stage, f, _, ours, peer, peer_ms, _ = c
    peer = {"qpdf-overlay": "qpdf --overlay", "pdftoppm": "pdftoppm -scale-to 256",
            "pdftoppm-tesseract": "pdftoppm -r 300 + tesseract"}.get(peer, peer)
    print(f"{stage} {f}\t{float(ours)/1e3:.4f}\t{peer}\t{float(peer_ms)/1e3:.4f}\t{targets.get((stage, peer), '–')}\tcriterion mean")
PY

echo "== search" >&2
if [ "${PEERS_SEARCH:-0}" = 1 ]; then
  DOCSTORE_SEARCH_DOCS=${DOCSTORE_SEARCH_DOCS:-1000000} cargo bench -q -p docstore-benches --bench search -- --warm-up-time 1 >/dev/null
fi
python3 - "$CARGO_TARGET_DIR/criterion" >>"$rows" <<'PY'
import json, os, sys, glob
for t in sorted(glob.glob(os.path.join(sys.argv[1], "search-latency-tantivy-*.json"))):
    n = t.rsplit("-", 1)[1][:-5]
    p = t.replace("tantivy", "postgres")
    if not os.path.exists(p):
        continue
    a, b = json.load(open(t)), json.load(open(p))
    print(f"search p99 @ {int(n):,} docs\t{a['p99_ms']/1e3:.5f}\tPostgreSQL FTS\t{b['p99_ms']/1e3:.5f}\tp99 ≤ 10 ms, ≤ 0.10×\tfrom benches/search.rs")
    print(f"indexing @ {int(n):,} docs (s per doc)\t{1/a['index_docs_per_s']:.6f}\tPostgreSQL FTS\t{1/b['index_docs_per_s']:.6f}\t–\tdocs/s inverted")
PY

echo "== day: $exams exams, docstore load vs the peers' shell pipeline" >&2
rm -rf "$work/store" "$work/day"
"$bin" --data-dir "$work/day" --json load --exams "$exams" --export "$work/files" >"$work/load.json"
cat >"$work/one.sh" <<'SH'
#!/usr/bin/env bash
# One uploaded file through the peers: the same work docstore does (encrypt the original and
# each rendition, stamp + thumbnail + text of reports, thumbnail of images).
set -e
f=$1 d=$2 r=$3 o=$4
b=$(basename "$f")
age -r "$r" -o "$d/$b.age" "$f"
case $f in
  *.pdf)
    qpdf --overlay "$o" -- "$f" "$d/$b.stamped.pdf"
    pdftoppm -scale-to 256 -png -f 1 -l 1 -singlefile "$f" "$d/$b.thumb"
    pdftotext "$f" "$d/$b.txt"
    for x in "$d/$b.stamped.pdf" "$d/$b.thumb.png" "$d/$b.txt"; do age -r "$r" -o "$x.age" "$x"; done ;;
  *.jpg)
    vipsthumbnail "$f" -s 256 -o "$d/$b.thumb.png"
    age -r "$r" -o "$d/$b.thumb.png.age" "$d/$b.thumb.png" ;;
esac
SH
chmod +x "$work/one.sh"
mkdir -p "$work/shell-out"
# The stamp overlay qpdf lays on every page: any one-page PDF of the day serves the timing.
pdfs=("$work/files"/*.pdf)
overlay=${pdfs[0]}
start=$(date +%s.%N)
ls "$work/files"/* | xargs -P 2 -I{} "$work/one.sh" {} "$work/shell-out" "$recipient" "$overlay"
shell_s=$(python3 -c "import time; print(time.time() - $start)")
python3 - "$work/load.json" "$shell_s" >>"$rows" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["report"]
print(f"day of {r['exams']} exams (2 cores)\t{r['wall_seconds']:.2f}\tshell pipeline (xargs -P 2)\t{float(sys.argv[2]):.2f}\t≤ 10 s, ≤ 0.20×\tours also indexes; exams/s {r['exams_per_second']:.1f}")
PY
cp "$work/load.json" "$work/load-embedded.json"

out=docs/benchmarks/peers-$(date +%F).md
{
  echo "# Peers, $(date +%F)"
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB; command: PEERS_SEARCH=${PEERS_SEARCH:-0} PEERS_STAGES=${PEERS_STAGES:-1} scripts/peers.sh $exams"
  echo
  echo "| work | docstore s | peer | peer s | docstore / peer | target | note |"
  echo "| --- | ---: | --- | ---: | ---: | --- | --- |"
  python3 - "$rows" <<'PY'
import sys
for line in open(sys.argv[1]):
    what, ours, peer, theirs, target, note = line.rstrip("\n").split("\t")
    ratio = float(ours) / float(theirs) if float(theirs) else float("nan")
    print(f"| {what} | {float(ours):.4g} | {peer} | {float(theirs):.4g} | {ratio:.2f}× | {target} | {note} |")
PY
  echo
  echo "docstore load (embedded), same run:"
  echo
  echo '```json'
  cat "$work/load-embedded.json"
  echo '```'
} >"$out"
cat "$out"
