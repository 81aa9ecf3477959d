#!/usr/bin/env bash
# Everything `make test` needs on this machine, installed when it can be.
#
#   e2e/deps.sh check     list what is missing; exit 1 when anything is
#   e2e/deps.sh install   as root on Debian: install the missing Debian packages and the
#                         Rust components (rustfmt, clippy); then check again. Elsewhere,
#                         or for what no package brings, stop with one message listing
#                         everything missing and how to get it.
#
# The toolchains themselves (Rust by rustup, Go 1.24 or later) are not installed here:
# Debian's own are too old for this project (edition 2024; k8s.io/kubernetes 1.34).
set -euo pipefail

# need CHECK PACKAGE HINT: CHECK is a shell test; PACKAGE the Debian package that
# brings it ("-" for none); HINT what it is for and how to get it elsewhere.
missing_packages=()
missing_lines=()
need() {
  local check=$1 package=$2 hint=$3
  eval "$check" >/dev/null 2>&1 && return 0
  if [ "$package" = - ]; then
    missing_lines+=("  - $hint")
  else
    missing_packages+=("$package")
    missing_lines+=("  - $hint (Debian: $package)")
  fi
}

go_is_recent() {
  local minor
  minor=$(go env GOVERSION 2>/dev/null | sed -E 's/^go1\.([0-9]+).*/\1/')
  [ "${minor:-0}" -ge 24 ]
}

# The Python packages of the gRPC health tests (Dagster, grpcio's health servicer),
# pinned in e2e/python-requirements.txt, in a virtualenv of their own: Debian packages
# neither. The tests find it at the same $VIGIE_E2E_PYTHON_DIR.
here=$(cd "$(dirname "$0")" && pwd)
python_dir=${VIGIE_E2E_PYTHON_DIR:-/var/lib/vigie-e2e/python}
python_stamp() {
  sha256sum "$here/python-requirements.txt" | cut -c1-16
}
python_env_ok() {
  [ -x "$python_dir/bin/python" ] && [ "$(cat "$python_dir/.stamp" 2>/dev/null)" = "$(python_stamp)" ]
}
# Builds the virtualenv unless it holds the requirements already (its stamp).
python_env_install() {
  python_env_ok && return 0
  /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || return 0
  echo "deps.sh: installing e2e/python-requirements.txt into $python_dir" >&2
  mkdir -p "$python_dir" || return 0
  /usr/bin/python3 -m venv --clear "$python_dir"
  "$python_dir/bin/pip" install --quiet --disable-pip-version-check -r "$here/python-requirements.txt"
  python_stamp >"$python_dir/.stamp"
}

has_component() {
  rustup component list --installed 2>/dev/null | grep -q "^$1"
}

survey() {
  missing_packages=()
  missing_lines=()
  # Toolchains.
  need "command -v cargo" - "Rust (stable) and cargo: https://rustup.rs"
  need "has_component rustfmt" - "rustfmt: rustup component add rustfmt"
  need "has_component clippy" - "clippy: rustup component add clippy"
  need "go_is_recent" - "Go 1.24 or later (builds the demo app and the Kubernetes control plane): https://go.dev/dl"
  # Building the crate: a C compiler, pkg-config and OpenSSL's headers (git2, libssh2).
  need "command -v cc" gcc "a C compiler for git2 and libssh2"
  need "command -v pkg-config" pkg-config "pkg-config, to find OpenSSL"
  need "pkg-config --exists openssl" libssl-dev "OpenSSL's headers, for git2's HTTPS and SSH"
  # The tests' real parts.
  need "command -v git" git "git: real repositories, git http-backend for the HTTP remote"
  need "command -v dockerd" docker.io "a Docker engine (dockerd), started by e2e/docker.sh"
  need "command -v docker" docker.io "the docker client"
  need "command -v openssl" openssl "openssl: TLS certificates of the engine and the control plane"
  need "command -v curl" curl "curl: etcd's health while the control plane starts"
  need "command -v setsid && command -v prlimit" util-linux "setsid and prlimit (util-linux)"
  need "command -v tar" tar "tar: the test images' root filesystems"
  need "test -x /usr/sbin/sshd" openssh-server "sshd: a real SSH git remote on 127.0.0.1"
  need "command -v ssh-keygen" openssh-client "ssh-keygen: the SSH remote's keys"
  need "/usr/bin/python3 -c 'import aiosmtpd'" python3-aiosmtpd "aiosmtpd: a real SMTP server (STARTTLS, AUTH) for the email notifications"
  need "command -v chromium" chromium "chromium: the web view's tests drive a real headless browser"
  need "command -v chromedriver" chromium-driver "chromedriver: the WebDriver server those tests speak to"
  need "/usr/bin/python3 -c 'import ensurepip, venv'" python3-venv "Python's venv, for the gRPC health tests' virtualenv"
  need "python_env_ok" - "Dagster and grpcio-health-checking (e2e/python-requirements.txt) in a virtualenv at $python_dir: e2e/deps.sh install builds it (VIGIE_E2E_PYTHON_DIR to put it elsewhere)"
  need "command -v debootstrap" debootstrap "debootstrap: the Dagster tests' base image (Debian and Python, by e2e/dagster.sh)"
}

report() {
  echo "make test needs what this machine lacks:" >&2
  printf '%s\n' "${missing_lines[@]}" >&2
}

install() {
  survey
  [ ${#missing_lines[@]} -eq 0 ] && return 0
  if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
      has_component "$component" || rustup component add "$component"
    done
  fi
  if [ ${#missing_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then
      local unique
      mapfile -t unique < <(printf '%s\n' "${missing_packages[@]}" | sort -u)
      echo "deps.sh: installing from Debian's packages: ${unique[*]}" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${unique[@]}" >/dev/null
    else
      echo "deps.sh: not root on Debian: install these yourself" >&2
    fi
  fi
  python_env_install
  survey
  if [ ${#missing_lines[@]} -gt 0 ]; then
    report
    return 1
  fi
}

case "${1:-install}" in
  check)
    survey
    if [ ${#missing_lines[@]} -gt 0 ]; then report; exit 1; fi
    echo "deps.sh: nothing missing"
    ;;
  install) install ;;
  *) echo "usage: $0 check|install" >&2; exit 2 ;;
esac
