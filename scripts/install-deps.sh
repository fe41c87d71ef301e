#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, on a bare
# Debian machine: promtool (package prometheus) to lint /metrics, and
# PostgreSQL's server binaries (package postgresql) for the probe tests,
# which start throwaway clusters with initdb and pg_ctl.
# redis-server (package redis-server, which also ships redis-cli) for the
# distributed-mode tests, which start one throwaway redis-server per test.
# curl (with HTTP/2) as the TLS client of the TLS tests, and ca-certificates,
# the system roots an https:// upstream without ca_file is verified against.
# The prometheus server itself (same package as promtool) for the tests that
# scrape a real floodwall; pgbouncer in front of a throwaway PostgreSQL for
# the `floodwall plan` test.
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Debian puts initdb in /usr/lib/postgresql/<version>/bin, off the PATH.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v pgbouncer >/dev/null 2>&1 || need+=(pgbouncer)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# headless Chromium, which the status page test opens the page in.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# nginx, which the backlog flag test puts in front of an upstream.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)

if [ ${#need[@]} -gt 0 ]; then
  # One package may be named twice (promtool and prometheus): dedupe.
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "install-deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  # Do not start services from package scripts: tests start their own.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
echo "install-deps: promtool $(promtool --version 2>&1 | head -1 | awk '{print $3}')"
initdb_bin=$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)
echo "install-deps: $("$initdb_bin" --version)"
echo "install-deps: $(redis-server --version | awk '{print $1, $2, $3}')"
echo "install-deps: $(pgbouncer --version | head -1)"
