#!/usr/bin/env bash
# Prints the path of a promtool binary (the deploy tests check deploy/prometheus/ with it).
# Uses promtool from PATH when there is one; otherwise unpacks Debian's `prometheus` package into
# .cache/promtool. Unpacked, not installed: installing the package would also start a Prometheus
# server on :9090 on machines with an init system, and the tests need only the checker.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR="$CACHE/promtool"
BIN="$DIR/usr/bin/promtool"

if command -v promtool >/dev/null; then command -v promtool; exit 0; fi
if [ -x "$BIN" ]; then printf '%s\n' "$BIN"; exit 0; fi

command -v apt-get >/dev/null || die "promtool is missing and this is not a Debian/Ubuntu machine: install Prometheus's promtool (https://prometheus.io/download/) and put it on PATH."
download() { (cd "$DIR/deb" && apt-get download prometheus >/dev/null 2>&1); }
rm -rf "$DIR" && mkdir -p "$DIR/deb"
log "promtool: unpacking it from Debian's prometheus package into $DIR"
if ! download; then
  # The package lists may be missing (a fresh container): refreshing them needs root.
  [ "$(id -u)" = 0 ] || die "cannot download Debian's prometheus package (run 'apt-get update' as root, or put promtool on PATH)"
  apt-get update -qq >/dev/null 2>&1 || true
  download || die "apt-get download prometheus failed: put promtool on PATH (https://prometheus.io/download/)"
fi
dpkg-deb -x "$DIR"/deb/prometheus_*.deb "$DIR" || die "could not unpack $(ls "$DIR"/deb)"
# Only the checker is needed; the server binary is as large again.
rm -rf "$DIR/deb" "$DIR/usr/bin/prometheus"
[ -x "$BIN" ] || die "the prometheus package holds no usr/bin/promtool"
"$BIN" --version >/dev/null 2>&1 || die "$BIN does not run"
printf '%s\n' "$BIN"
