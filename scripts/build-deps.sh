#!/usr/bin/env bash
# Installs, from Debian's packages and only if missing, what building the workspace needs beyond
# cargo: cmake (librdkafka is built from source by rdkafka's `cmake-build`), OpenSSL's headers
# (librdkafka's TLS and SASL/SCRAM) and libcurl's headers.
# librdkafka 2.12 includes <curl/curl.h> even with curl disabled (confluentinc/librdkafka#5135:
# an `#ifdef` on a macro its CMake always defines); the header is read, nothing is linked.
# With --test, also what the `ocr` feature builds and runs with (Tesseract and Leptonica headers,
# libclang for their bindings, the Portuguese and English models) and the reference tools the
# tests and benches compare against (poppler-utils: pdftotext, pdftoppm; qpdf; libvips-tools:
# vipsthumbnail).
set -euo pipefail
need=()
if [ "${1:-}" = "--test" ]; then
  command -v pdftotext >/dev/null || need+=(poppler-utils)
  command -v qpdf >/dev/null || need+=(qpdf)
  command -v vipsthumbnail >/dev/null || need+=(libvips-tools)
  [ -f /usr/include/tesseract/capi.h ] || need+=(libtesseract-dev)
  [ -f /usr/include/leptonica/allheaders.h ] || need+=(libleptonica-dev)
  compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null || compgen -G '/usr/lib/x86_64-linux-gnu/libclang*.so' >/dev/null \
    || need+=(libclang-dev)
  compgen -G '/usr/share/tesseract-ocr/*/tessdata/por.traineddata' >/dev/null || need+=(tesseract-ocr-por)
  compgen -G '/usr/share/tesseract-ocr/*/tessdata/eng.traineddata' >/dev/null || need+=(tesseract-ocr-eng)
fi
command -v cmake >/dev/null || need+=(cmake)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
compgen -G '/usr/include/curl/curl.h' >/dev/null || compgen -G '/usr/include/*/curl/curl.h' >/dev/null \
  || need+=(libcurl4-openssl-dev)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing ${need[*]} from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
sudo_=(); [ "$(id -u)" = 0 ] || sudo_=(sudo)
"${sudo_[@]}" apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
  || { "${sudo_[@]}" apt-get update -qq >/dev/null && "${sudo_[@]}" apt-get install -y -qq "${need[@]}" >/dev/null; }
