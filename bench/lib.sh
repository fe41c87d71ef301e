# Shared by the bench scripts, which source it after `cd` to the repo root:
#   source bench/lib.sh
#
# need_commands CMD...  installs, with apt-get, the Debian package of the
#                       same name for each CMD not on PATH nor in /usr/sbin
#                       (haproxy, nginx, wrk), without starting its service.
# sbin CMD              the path of CMD: on PATH, else /usr/sbin/CMD.
# free_port             a free loopback TCP port.

need_commands() {
  local need=() c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || need+=("$c")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # Do not start services from package scripts: the benches start their own.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
}

sbin() {
  command -v "$1" || echo "/usr/sbin/$1"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
