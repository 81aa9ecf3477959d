#!/usr/bin/env bash
# A Docker engine for the demo and the end-to-end tests.
#
#   e2e/docker.sh ensure    engine answering? done. Else, as root on Debian: install
#                           docker.io if missing and start dockerd. Else: say what to do.
#   e2e/docker.sh stop      stop the dockerd this script started
#   e2e/docker.sh start     start it again (waits until it answers)
#   e2e/docker.sh restart   stop, then start
#
# A dockerd started here also listens on tcp://127.0.0.1:2376 with TLS (client
# certificates required); the certificates are in $VIGIE_E2E_TLS_DIR
# (default /var/lib/vigie-e2e/tls).
set -euo pipefail
pidfile=/run/vigie-dockerd.pid
logfile=/var/log/vigie-dockerd.log
# TLS material of the engine's TCP listener (127.0.0.1:2376), for the TLS tests.
tls=${VIGIE_E2E_TLS_DIR:-/var/lib/vigie-e2e/tls}

make_tls() {
  [ -f "$tls/client-key.pem" ] && return 0
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=vigie e2e CA" \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -days 3650 -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
      -extfile server.ext -out server-cert.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=vigie" -keyout client-key.pem -out client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -days 3650 -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
      -extfile client.ext -out client-cert.pem 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
}

answers() { docker info >/dev/null 2>&1; }

wait_answers() {
  for _ in $(seq 1 150); do
    answers && return 0
    sleep 0.2
  done
  echo "dockerd did not answer within 30 s; see $logfile" >&2
  return 1
}

start() {
  if answers; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "No Docker engine answers. Install Docker (Debian: sudo apt-get install docker.io) and start it (sudo systemctl start docker)." >&2
    return 1
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    if [ -f /etc/debian_version ]; then
      echo "installing docker.io from Debian's packages" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    else
      echo "No dockerd on this machine: install Docker for your distribution." >&2
      return 1
    fi
  fi
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start docker
  else
    make_tls
    # dockerd outlives this script: it must not inherit its caller's descriptors (a
    # lock held with flock around `make test` would be held for as long as it runs).
    (
      for fd in /proc/$BASHPID/fd/*; do
        n=${fd##*/}
        if [ "$n" -gt 2 ]; then eval "exec $n>&-" 2>/dev/null || true; fi
      done
      exec nohup dockerd -H unix:///var/run/docker.sock -H tcp://127.0.0.1:2376 \
        --tlsverify --tlscacert "$tls/ca.pem" --tlscert "$tls/server-cert.pem" --tlskey "$tls/server-key.pem" \
        >>"$logfile" 2>&1
    ) &
    echo $! >"$pidfile"
  fi
  wait_answers
}

stop() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    rm -f "$pidfile"
  elif command -v systemctl >/dev/null 2>&1 && systemctl is-active docker >/dev/null 2>&1; then
    systemctl stop docker docker.socket
  else
    echo "no dockerd started by this script (or by systemd) to stop" >&2
    return 1
  fi
  # The engine is gone once nothing answers.
  for _ in $(seq 1 100); do
    answers || return 0
    sleep 0.1
  done
  echo "dockerd still answers after stop" >&2
  return 1
}

case "${1:-ensure}" in
  ensure|start) start ;;
  stop) stop ;;
  restart) stop && start ;;
  *) echo "usage: $0 ensure|start|stop|restart" >&2; exit 64 ;;
esac
