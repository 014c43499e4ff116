#!/usr/bin/env bash
# Our CLI next to its peers, on the same inputs, in one run; prints a table of ratios (ours /
# peer: time, lower is better) with the throughput issue's targets, and writes it with the date
# and the machine to docs/benchmarks/peers-<date>.md.
#   envelope   docstore put / get (embedded store)      vs age -e / age -d        (256 MiB file)
#              framed seal/open in process (criterion)  vs raw AES-256-GCM of aws-lc, same run
#   stages     docstore stamp/thumbnail/extract         vs qpdf --overlay, vipsthumbnail,
#                                                          pdftoppm -scale-to 256, pdftotext
#              (criterion, whole process vs whole process: scripts/bench-stages.sh)
#   search     tantivy (docstore)                       vs PostgreSQL FTS 'portuguese' (from the
#              search bench's JSON at DOCSTORE_SEARCH_DOCS, run here when PEERS_SEARCH=1)
#   day        docstore load (embedded, whole pipeline) vs a shell pipeline of the peers over the
#              same exported files (qpdf, pdftoppm, pdftotext, vipsthumbnail, age; 2 at a time)
#   services   docstore load on Kafka + S3/KMS (moto) + PostgreSQL, next to the embedded day
#              (PEERS_SERVICES=1: scripts/services.sh is started, and stopped, unless
#              DOCSTORE_SERVICES_DIR already holds a running set)
# Usage: scripts/peers.sh [EXAMS]   (default 1000; PEERS_SIZE_MB=256)
#   PEERS_SEARCH=1 adds the search bench's rows (run here); PEERS_STAGES=0 reads the stage benches'
#   last results instead of running them. The criterion runs save the baseline `peers`
#   (PEERS_BASELINE=name for another): `scripts/bench-stages.sh --baseline peers` and
#   `cargo bench -p docstore-benches --bench envelope -- --baseline peers` compare with it later.
#   PEERS_PROFILE=1 also records `perf record -g` of the whole-process rows and of the day, and
#   writes the hottest symbols of each to docs/benchmarks/peers-<date>-profiles.md.
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
# A copy: the stage benches build the OCR variant to the same path.
cp "$CARGO_TARGET_DIR/release/docstore" "$CARGO_TARGET_DIR/release/docstore-default"
bin=$CARGO_TARGET_DIR/release/docstore-default
baseline=${PEERS_BASELINE:-peers}
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
echo "== envelope in process: criterion, framed vs raw aws-lc AES-256-GCM" >&2
cargo bench -q -p docstore-benches --bench envelope -- --warm-up-time 1 --measurement-time 3 \
  --save-baseline "$baseline" >/dev/null
python3 - "$CARGO_TARGET_DIR/criterion" >>"$rows" <<'PY'
import glob, json, os, sys
def mean(group, who):
    hits = glob.glob(os.path.join(sys.argv[1], group, who, "*", "new", "estimates.json"))
    return json.load(open(hits[0]))["mean"]["point_estimate"] / 1e9 if hits else None
for group in sorted(os.listdir(sys.argv[1])):
    if not group.startswith("envelope_"):
        continue
    label = group.split("_", 1)[1]
    for op, what in (("encrypt", "seal"), ("decrypt", "open")):
        ours, raw = mean(group, f"framed_{op}_in_place"), mean(group, f"raw_{op}")
        if ours and raw:
            print(f"framed {what} {label}, in process\t{ours:.6f}\traw aws-lc AES-256-GCM\t{raw:.6f}\t≤ 1.11× (≥ 0.9× throughput)\tcriterion mean")
PY

echo "== stages: criterion, scripts/bench-stages.sh" >&2
if [ "${PEERS_STAGES:-1}" = 1 ]; then
  scripts/bench-stages.sh --warm-up-time 1 --measurement-time 3 --save-baseline "$baseline" >"$work/stages.md"
else
  scripts/bench-stages.sh --table-only >"$work/stages.md"
fi
python3 - "$work/stages.md" >>"$rows" <<'PY'
import sys
targets = {("stamp", "qpdf --overlay"): "≤ 0.50×", ("thumbnail", "pdftoppm -scale-to 256"): "≤ 0.30×",
           ("extract", "pdftotext"): "≤ 1.00×, recall ≥ 0.99 kept"}
# The 12 MP photo is the thumbnail row with a target; the scanned page is shown for reference.
file_targets = {"image-large-photo-4032x3024.jpg": "≤ 0.50×"}
for line in open(sys.argv[1]):
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    if len(c) != 7 or c[0] in ("stage", "---") or c[3] in ("–", ""):
        continue
    stage, f, _, ours, peer, peer_ms, _ = c
    peer = {"qpdf-overlay": "qpdf --overlay", "pdftoppm": "pdftoppm -scale-to 256",
            "pdftoppm-tesseract": "pdftoppm -r 300 + tesseract"}.get(peer, peer)
    print(f"{stage} {f}\t{float(ours)/1e3:.4f}\t{peer}\t{float(peer_ms)/1e3:.4f}\t{file_targets.get(f) or targets.get((stage, peer), '–')}\tcriterion mean")
PY

if [ "${PEERS_SEARCH:-0}" = 1 ]; then
  echo "== search" >&2
  DOCSTORE_SEARCH_DOCS=${DOCSTORE_SEARCH_DOCS:-1000000} cargo bench -q -p docstore-benches --bench search -- --warm-up-time 1 >/dev/null
  python3 - "$CARGO_TARGET_DIR/criterion" >>"$rows" <<'PY'
import json, os, sys, glob
for t in sorted(glob.glob(os.path.join(sys.argv[1], "search-latency-tantivy-*.json"))):
    kind, n = t[:-5].rsplit("-", 2)[1:]
    p = os.path.join(sys.argv[1], f"search-latency-postgres-{n}.json")
    if not os.path.exists(p):
        continue
    a, b = json.load(open(t)), json.load(open(p))
    print(f"search p99 @ {int(n):,} docs, {kind} index\t{a['p99_ms']/1e3:.5f}\tPostgreSQL FTS\t{b['p99_ms']/1e3:.5f}\tp99 ≤ 10 ms\tfrom benches/search.rs")
    print(f"indexing @ {int(n):,} docs, {kind} index (s per doc)\t{1/a['index_docs_per_s']:.6f}\tPostgreSQL FTS\t{1/b['index_docs_per_s']:.6f}\t–\tdocs/s inverted")
PY
fi

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
print(f"day of {r['exams']} exams, embedded (2 cores)\t{r['wall_seconds']:.2f}\tshell pipeline (xargs -P 2)\t{float(sys.argv[2]):.2f}\t≤ 15 s, ≤ 0.20×, ≥ 1.85 cores busy\tours also indexes; exams/s {r['exams_per_second']:.1f}, cores busy {r['cores_busy']:.2f}")
PY
cp "$work/load.json" "$work/load-embedded.json"
rm -rf "$work/day" "$work/shell-out"

if [ "${PEERS_SERVICES:-0}" = 1 ]; then
  echo "== day on services: Kafka + S3/KMS (moto) + PostgreSQL" >&2
  started=
  if [ -z "${DOCSTORE_SERVICES_DIR:-}" ] || [ ! -f "$DOCSTORE_SERVICES_DIR/env" ]; then
    # Outside $work (mode 0700): PostgreSQL runs as its own user and must reach its directory.
    DOCSTORE_SERVICES_DIR=$(mktemp -d /tmp/docstore-peers-services.XXXXXX)
    export DOCSTORE_SERVICES_DIR
    chmod 755 "$DOCSTORE_SERVICES_DIR"
    started=1
    trap 'scripts/services.sh stop || true; rm -rf "$work" "$DOCSTORE_SERVICES_DIR"' EXIT
    scripts/services.sh start
  fi
  # shellcheck disable=SC1091
  source "$DOCSTORE_SERVICES_DIR/env"
  run=peers$(date +%s)
  # A bucket and a KMS key of this run's own, so earlier runs' objects are not in the way.
  AWS_ENDPOINT_URL=$DOCSTORE_TEST_AWS_ENDPOINT "$DOCSTORE_TEST_PYTHON" - "$run" <<'PY'
import boto3, sys
kw = dict(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
boto3.client("s3", **kw).create_bucket(Bucket=sys.argv[1])
kms = boto3.client("kms", **kw)
kms.create_alias(AliasName=f"alias/{sys.argv[1]}", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
PY
  services_exams=${PEERS_SERVICES_EXAMS:-$exams}
  # CPU seconds of a process so far (utime + stime): what moto and the broker spend on the day.
  cpu_of() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
  moto0=$(cpu_of "$DOCSTORE_TEST_MOTO_PID") kafka0=$(cpu_of "$DOCSTORE_TEST_KAFKA_PID")
  mkdir -p "$work/services-day"
  AWS_ENDPOINT_URL=$DOCSTORE_TEST_AWS_ENDPOINT AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    DOCSTORE_BLOBS=s3://$run DOCSTORE_METADATA=$DOCSTORE_TEST_PG_URL DOCSTORE_KEYS=kms://alias/$run \
    DOCSTORE_BUS="kafka://$DOCSTORE_TEST_KAFKA?partitions=4&prefix=$run" \
    "$bin" --data-dir "$work/services-day" --json load --exams "$services_exams" >"$work/load-services.json"
  moto=$(python3 -c "print(round($(cpu_of "$DOCSTORE_TEST_MOTO_PID") - $moto0, 1))")
  kafka=$(python3 -c "print(round($(cpu_of "$DOCSTORE_TEST_KAFKA_PID") - $kafka0, 1))")
  python3 - "$work/load-services.json" "$work/load-embedded.json" "$moto" "$kafka" >>"$rows" <<'PY'
import json, sys
r, e = (json.load(open(p))["report"] for p in sys.argv[1:3])
moto, kafka = float(sys.argv[3]), float(sys.argv[4])
w = r["wall_seconds"]
print(f"day of {r['exams']} exams on Kafka + S3/KMS (moto) + PostgreSQL\t{w:.2f}\tthe embedded day above\t{e['wall_seconds'] * r['exams'] / e['exams']:.2f}\t≥ 20 exams/s\texams/s {r['exams_per_second']:.1f}; peer time scaled to the same exams; CPU seconds: docstore {r['cpu_seconds']:.0f}, moto {moto:.0f} ({moto / w:.2f} cores), Kafka {kafka:.0f}")
PY
  rm -rf "$work/services-day"
  if [ -n "$started" ]; then
    scripts/services.sh stop
    rm -rf "$DOCSTORE_SERVICES_DIR"
    trap 'rm -rf "$work"' EXIT
  fi
fi

profiles=
if [ "${PEERS_PROFILE:-0}" = 1 ]; then
  echo "== profiles: perf record -g" >&2
  command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
  profiles=docs/benchmarks/peers-$(date +%F)-profiles.md
  c=$DOCSTORE_CORPUS
  export DOCSTORE_DATA_DIR=$work/pstore
  "$bin" init >/dev/null 2>&1
  id=$("$bin" --json put "$work/big.bin" --patient p --exam e | python3 -c 'import json,sys; print(json.load(sys.stdin)["document_id"])')
  # name | command (repeated so that short processes give enough samples)
  jobs=(
    "docstore put, ${size_mb} MiB|$bin put $work/big.bin --patient p --exam e --document $id"
    "docstore get, ${size_mb} MiB|$bin get $id -o $work/out.bin"
    "stamp, 8p signed, x20|for i in \$(seq 20); do $bin stamp $c/text-pt-8p-diario-oficial-signed.pdf -o $work/p.pdf; done"
    "thumbnail, A0 PDF, x20|for i in \$(seq 20); do $bin thumbnail $c/pagesize-a0-survey-plan.pdf -o $work/p.png; done"
    "thumbnail, 12 MP JPEG, x20|for i in \$(seq 20); do $bin thumbnail $c/image-large-photo-4032x3024.jpg -o $work/p.png; done"
    "extract, 8p signed, x5|for i in \$(seq 5); do $bin extract $c/text-pt-8p-diario-oficial-signed.pdf -o $work/p.txt; done"
    "extract, 47p, x5|for i in \$(seq 5); do $bin extract $c/text-47p-word2013-xrefstream.pdf -o $work/p.txt; done"
    "day of $exams exams, embedded|$bin --data-dir $work/pday --json load --exams $exams"
  )
  {
    echo "# Profiles of the peers run, $(date +%F)"
    echo
    echo "\`perf record -F 499 -g\` of each command, then \`perf report --no-children --sort dso,symbol\`:"
    echo "the symbols with at least 1.5 % of the samples. Written by PEERS_PROFILE=1 scripts/peers.sh $exams."
    for j in "${jobs[@]}"; do
      name=${j%%|*} cmd=${j#*|}
      perf record -q -F 499 -g -o "$work/perf.data" -- bash -c "$cmd" >/dev/null 2>&1
      echo
      echo "## $name"
      echo
      echo '```'
      perf report -q -i "$work/perf.data" --no-children --sort dso,symbol -g none --percent-limit 1.5 2>/dev/null |
        sed -e 's/[[:space:]]*$//' -e "s#$work#WORK#g" | grep -v '^$' | head -25
      echo '```'
      rm -rf "$work/perf.data" "$work/pday"
    done
  } >"$profiles"
  rm -rf "$work/pstore"
fi

out=docs/benchmarks/peers-$(date +%F).md
{
  echo "# Peers, $(date +%F)"
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB; at $(git rev-parse --short HEAD); command: PEERS_SEARCH=${PEERS_SEARCH:-0} PEERS_STAGES=${PEERS_STAGES:-1} PEERS_SERVICES=${PEERS_SERVICES:-0} PEERS_PROFILE=${PEERS_PROFILE:-0} scripts/peers.sh $exams"
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
  [ -n "$profiles" ] && { echo; echo "Profiles of the whole-process rows and of the day: $(basename "$profiles")."; }
  echo
  echo "docstore load (embedded), same run:"
  echo
  echo '```json'
  cat "$work/load-embedded.json"
  echo '```'
  if [ -f "$work/load-services.json" ]; then
    echo
    echo "docstore load on Kafka + S3/KMS (moto) + PostgreSQL, same run:"
    echo
    echo '```json'
    cat "$work/load-services.json"
    echo '```'
  fi
} >"$out"
cat "$out"
