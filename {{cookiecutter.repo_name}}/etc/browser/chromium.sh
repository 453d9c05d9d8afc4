#!/usr/bin/env bash
# chromium.sh - the headless browser of the tests: tests/test_compare.py opens bin/compare.py's report.html in
# Chromium through selenium and Chromium's own driver (never one downloaded by selenium).
#
#   chromium.sh install   apt-get Debian's chromium and chromium-driver (as root; idempotent)
#   chromium.sh check     print the paths and versions of the browser and the driver; exit 1 if one is missing
#
# The tests look for chromium (else chromium-browser, google-chrome) and chromedriver on PATH, as `check` does.
# Ubuntu's chromium package is a snap, which containers cannot run: there, use Google Chrome and the
# chromedriver of the same version (GitHub's Ubuntu runners have both).
set -euo pipefail

PKGS=(chromium chromium-driver)

say() { echo "chromium.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

browser() { command -v chromium || command -v chromium-browser || command -v google-chrome || true; }

do_install() {
  local missing=() p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [[ -n ${missing[*]} ]] || { say "packages already installed"; return 0; }
  [[ $(id -u) == 0 ]] || die "installing ${missing[*]} needs root: sudo $0 install"
  command -v apt-get >/dev/null || die "no apt-get here: install Chromium and its chromedriver by hand"
  say "installing ${missing[*]}"
  local log; log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PKGS[@]}"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2; rm -f "$log"; die "apt-get failed (output above)"
  fi
  rm -f "$log"; say "packages installed"
}

do_check() {
  local found driver
  found=$(browser); driver=$(command -v chromedriver || true)
  [[ -n $found ]] || die "no chromium, chromium-browser or google-chrome on PATH (sudo $0 install)"
  [[ -n $driver ]] || die "no chromedriver on PATH (sudo $0 install)"
  # (Debian's chromium wrapper script complains on stderr about its environment: only stdout is the version.)
  echo "browser: $found ($("$found" --version 2>/dev/null | head -n 1))"
  echo "driver:  $driver ($("$driver" --version 2>/dev/null | head -n 1))"
}

case ${1:-} in
  install) do_install ;;
  check) do_check ;;
  *) die "usage: $0 {install | check}" ;;
esac
