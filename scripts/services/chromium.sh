#!/usr/bin/env bash
# Headless Chromium for the browser tests (the queue dashboard): `chromium.sh` prints the path of
# the browser binary on stdout, installing Debian's `chromium` package first when none is there.
# CHROMIUM_PATH names another binary (a Chrome, a Chromium of your own) and skips the install.
# Debian's package, not a browser download: the machines reach Debian's mirrors, not browser CDNs.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -n "${CHROMIUM_PATH:-}" ]; then
  [ -x "$CHROMIUM_PATH" ] || die "chromium: CHROMIUM_PATH=$CHROMIUM_PATH is not an executable file; unset it to use Debian's chromium"
  printf '%s\n' "$CHROMIUM_PATH"
  exit 0
fi
if ! command -v chromium >/dev/null; then
  # fonts-liberation: the screenshots need a font with Latin glyphs (the package only recommends one).
  apt_install chromium fonts-liberation
fi
command -v chromium >/dev/null || die "chromium: installed, but no chromium on PATH"
command -v chromium
