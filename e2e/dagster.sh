#!/usr/bin/env bash
# Dagster images for the end-to-end tests, built without a registry: a Debian bookworm
# root filesystem (debootstrap, from this machine's Debian mirror) with Python 3 and a
# venv holding pinned dagster, dagster-webserver and dagster-graphql from PyPI,
# imported with `docker import`; code locations are that base plus a directory of
# Python code.
#
#   e2e/dagster.sh base                   ensure the base image; print its tag,
#                                         vigie-dagster:<dagster version>-<hash of this script>
#   e2e/dagster.sh location NAME SHA DIR  ensure vigie-dagster-NAME:SHA, the base with DIR
#                                         copied to /opt/dagster/app; print its tag
#
# The base image is built once: an existing tag is reused at once; else the root
# filesystem's tarball kept in $VIGIE_DAGSTER_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/vigie) is imported (a dockerd restart or an image
# prune costs seconds); else it is built (debootstrap and pip: minutes; as root, with
# debootstrap installed: `make deps`). Concurrent calls build it once (a lock in the
# cache). A location image is rebuilt only when DIR's content changed.
#
# In the images: PATH starts with /opt/dagster/venv/bin, PYTHONPATH and the working
# directory are /opt/dagster/app, DAGSTER_HOME is /opt/dagster/home (telemetry off).
set -euo pipefail

dagster_version=1.13.28
# The whole environment, pinned (`pip freeze` of the venv; to move on, install
# dagster==X dagster-webserver==X dagster-graphql==X unpinned and freeze again): the
# tag changes with it.
requirements='
alembic==1.20.1
annotated-types==0.8.0
antlr4-python3-runtime==4.13.2
anyio==4.16.0
backoff==2.2.1
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
coloredlogs==14.0
dagster==1.13.28
dagster-graphql==1.13.28
dagster-pipes==1.13.28
dagster-shared==1.13.28
dagster-webserver==1.13.28
docstring_parser==0.18.0
filelock==4.3.1
fsspec==2026.9.0
gql==4.0.0
graphene==3.4.3
graphql-core==3.2.14
graphql-relay==3.2.0
grpcio==1.85.3
grpcio-health-checking==1.85.1
h11==0.16.0
httptools==0.9.0
humanfriendly==10.0
idna==3.20
Jinja2==3.1.6
Mako==1.4.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
multidict==7.2.1
packaging==26.4
pathlib_abc==0.5.2
platformdirs==4.14.9
propcache==0.5.4
protobuf==7.36.2
pydantic==2.14.4
pydantic_core==2.50.5
Pygments==2.21.0
python-dateutil==2.9.0.post0
python-dotenv==1.2.4
pytz==2026.6
PyYAML==6.0.4
requests==2.34.2
requests-toolbelt==1.0.0
rich==15.0.0
six==1.17.0
SQLAlchemy==2.1.9
starlette==1.10.0
structlog==26.1.0
tabulate==0.10.0
tomli==2.5.0
tomlkit==0.15.2
toposort==1.10
tqdm==4.70.1
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
universal_pathlib==0.3.10
urllib3==2.8.0
uvicorn==0.55.0
uvloop==0.23.0
watchdog==6.0.0
watchfiles==1.3.0
websockets==17.4
yarl==1.25.1
'
# The image's settings, over the root filesystem.
import_changes=(
  'ENV PATH=/opt/dagster/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  'ENV LANG=C.UTF-8'
  'ENV PYTHONUNBUFFERED=1'
  'ENV PYTHONPATH=/opt/dagster/app'
  'ENV DAGSTER_HOME=/opt/dagster/home'
  'WORKDIR /opt/dagster/app'
  "LABEL vigie.dev/dagster-version=$dagster_version"
)
cache=${VIGIE_DAGSTER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/vigie}

log() { echo "dagster.sh: $*" >&2; }

exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The first Debian archive (not security, not a snapshot) in this machine's sources.
mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)
  echo "${VIGIE_DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

# Builds the root filesystem and keeps it as $tarball.
build_rootfs() {
  [ "$(id -u)" = 0 ] || { log "building the base image needs root (debootstrap, chroot)"; exit 1; }
  command -v debootstrap >/dev/null || { log "debootstrap is missing (make deps; Debian: debootstrap)"; exit 1; }
  local root started
  started=$(date +%s)
  # What a killed build left (the lock is held: no other build is under way).
  # --one-file-system: never into a /proc, /sys or /dev that debootstrap had mounted.
  rm -rf --one-file-system "$cache"/rootfs.* "$cache"/*.tar.gz.tmp
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  # shellcheck disable=SC2064 # $root is fixed now
  trap "rm -rf --one-file-system '$root'" EXIT
  log "debootstrap bookworm from $(mirror) (first time only: a few minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$(mirror)" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # debootstrap unmounts what it mounted (/proc, /sys, a /dev it may bind); what is
  # removed below must not reach the host's.
  if grep -q " $root/" /proc/mounts; then log "still mounted under $root after debootstrap"; exit 1; fi
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  printf '%s\n' "$requirements" >"$root/tmp/requirements.txt"
  # The host's certificate authorities: they are the ones that reach PyPI from here
  # (a proxy that inspects TLS has its own in there).
  local keep=() v ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  if [ -f "$ca" ]; then
    cp "$ca" "$root/tmp/ca.crt"
    keep+=(PIP_CERT=/tmp/ca.crt)
  fi
  # A clean environment otherwise: the host's other pip settings (find-links) are not
  # the chroot's; an index or a proxy is kept.
  for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY; do
    [ -z "${!v:-}" ] || keep+=("$v=${!v}")
  done
  in_root() {
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "${keep[@]}" "$@"
  }
  in_root python3 -m venv /opt/dagster/venv
  log "pip install dagster==$dagster_version, dagster-webserver, dagster-graphql and their pinned dependencies"
  in_root /opt/dagster/venv/bin/pip install --no-cache-dir --disable-pip-version-check -q \
    -r /tmp/requirements.txt
  in_root /opt/dagster/venv/bin/dagster --version >&2
  mkdir -p "$root/opt/dagster/app" "$root/opt/dagster/home"
  printf 'telemetry:\n  enabled: false\n' >"$root/opt/dagster/home/dagster.yaml"
  rm -rf "$root/tmp/"* "$root/root/.cache" "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb \
    "$root/var/lib/apt/lists/"* "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" \
    "$root/var/log/"* "$root/etc/resolv.conf" "$root/dev/"*
  tar -C "$root" --numeric-owner -c . | gzip -1 >"$tarball.tmp"
  mv "$tarball.tmp" "$tarball"
  rm -rf --one-file-system "$root"
  trap - EXIT
  log "root filesystem built in $(($(date +%s) - started)) s: $tarball ($(du -h "$tarball" | cut -f1))"
}

# The tag follows what makes the image (the pins, the build's commands, the settings),
# not this file's comments.
hash=$( {
  echo "$requirements"
  declare -f build_rootfs
  printf '%s\n' "${import_changes[@]}"
} | sha256sum | cut -c1-12)
base=vigie-dagster:$dagster_version-$hash
tarball=$cache/dagster-$dagster_version-$hash.tar.gz

ensure_base() {
  exists "$base" && return 0
  mkdir -p "$cache"
  exec 9>"$cache/dagster.lock"
  flock 9
  # Another caller may have built it while this one waited.
  if ! exists "$base"; then
    [ -f "$tarball" ] || build_rootfs
    local changes=() c
    for c in "${import_changes[@]}"; do changes+=(--change "$c"); done
    docker import "${changes[@]}" \
      "$tarball" "$base" >/dev/null
  fi
  exec 9>&-
}

# location NAME SHA DIR
location() {
  local name=$1 sha=$2 dir=$3 tag content tmp old
  [ -d "$dir" ] || { log "$dir is not a directory"; exit 1; }
  tag=vigie-dagster-$name:$sha
  ensure_base
  # One build of a tag at a time: concurrent tests asking for the same image wait,
  # then find it built.
  mkdir -p "$cache"
  exec 8>"$cache/location-$name-$sha.lock"
  flock 8
  # What is copied: the files' paths and contents, and the base.
  content=$( (
    echo "$base"
    cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
  ) | sha256sum | cut -c1-16)
  if [ "$(docker image inspect -f '{{index .Config.Labels "vigie.dev/dagster-content"}}' "$tag" 2>/dev/null)" = "$content" ]; then
    echo "$tag"
    return 0
  fi
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # $tmp is fixed now
  trap "rm -rf '$tmp'" EXIT
  printf 'FROM %s\nCOPY . /opt/dagster/app/\nLABEL vigie.dev/dagster-content=%s vigie.dev/dagster-location=%s vigie.dev/sha=%s\n' \
    "$base" "$content" "$name" "$sha" >"$tmp/Dockerfile"
  old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  # The classic builder: it takes FROM a local image without pulling (buildx may be absent).
  # Its deprecation notice on stderr is shown only with a failure.
  DOCKER_BUILDKIT=0 docker build -q -f "$tmp/Dockerfile" -t "$tag" "$dir" >/dev/null 2>"$tmp/log" ||
    { cat "$tmp/log" >&2; exit 1; }
  # The image this tag named before is dropped, unless a container still uses it.
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  echo "$tag"
}

case "${1:-}" in
  base)
    ensure_base
    echo "$base"
    ;;
  location)
    [ $# -eq 4 ] || { echo "usage: $0 location NAME SHA DIR" >&2; exit 64; }
    location "$2" "$3" "$4"
    ;;
  *) echo "usage: $0 base | location NAME SHA DIR" >&2; exit 64 ;;
esac
