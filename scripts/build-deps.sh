#!/usr/bin/env bash
# Installs, from Debian's packages and only if missing, what building the workspace needs beyond
# cargo: cmake (librdkafka is built from source by rdkafka's `cmake-build`) and libcurl's headers.
# librdkafka 2.12 includes <curl/curl.h> even with curl disabled (confluentinc/librdkafka#5135:
# an `#ifdef` on a macro its CMake always defines); the header is read, nothing is linked.
# With --test, also the reference tools the tests compare against (poppler-utils: pdftotext; qpdf).
set -euo pipefail
need=()
if [ "${1:-}" = "--test" ]; then
  command -v pdftotext >/dev/null || need+=(poppler-utils)
  command -v qpdf >/dev/null || need+=(qpdf)
fi
command -v cmake >/dev/null || need+=(cmake)
compgen -G '/usr/include/curl/curl.h' >/dev/null || compgen -G '/usr/include/*/curl/curl.h' >/dev/null \
  || need+=(libcurl4-openssl-dev)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing ${need[*]} from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
sudo_=(); [ "$(id -u)" = 0 ] || sudo_=(sudo)
"${sudo_[@]}" apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
  || { "${sudo_[@]}" apt-get update -qq >/dev/null && "${sudo_[@]}" apt-get install -y -qq "${need[@]}" >/dev/null; }
