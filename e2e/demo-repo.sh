#!/usr/bin/env bash
# Builds the demo application's git repository and one image per commit, locally
# (no registry is reachable): vigie-demo:<sha>. Idempotent: an existing repository
# and existing images are reused.
#
#   e2e/demo-repo.sh DIR      -> DIR/repo (git), DIR/commits ("name sha" lines)
#
# Commits: good (healthy, meant to pass CI), bad (healthy, meant to fail CI),
# fixed (healthy), crash (exits at start), unhealthy (answers 500 on /health).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: demo-repo.sh DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

bin="$out/demo-app"
if [ ! -x "$bin" ] || [ "$here/demo-app/main.go" -nt "$bin" ]; then
  (cd "$here/demo-app" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$bin" .)
  # A new binary: the images are rebuilt.
  if [ -f "$out/commits" ]; then
    while read -r _ sha; do docker rmi -f "vigie-demo:$sha" >/dev/null 2>&1 || true; done < "$out/commits"
  fi
  docker rmi -f vigie-demo-runtime:latest vigie-demo:latest >/dev/null 2>&1 || true
  docker images --format '{{.Repository}}:{{.Tag}}' | grep '^vigie-demo-hc:' | xargs -r docker rmi -f >/dev/null 2>&1 || true
fi

repo="$out/repo"
if [ ! -f "$out/commits" ]; then
  rm -rf "$repo"
  git init -q -b main "$repo"
  commit() { # name health message
    printf '%s\n' "$2" > "$repo/health"
    printf '%s\n' "$3" > "$repo/message"
    git -C "$repo" add -A
    GIT_AUTHOR_DATE="2026-11-01T10:00:00Z" GIT_COMMITTER_DATE="2026-11-01T10:00:00Z" \
      git -C "$repo" -c user.name=Demo -c user.email=demo@example.org commit -q -m "$1: $3"
    echo "$1 $(git -C "$repo" rev-parse HEAD)" >> "$out/commits.tmp"
  }
  rm -f "$out/commits.tmp"
  commit good ok "Bonjour from the good commit"
  commit bad ok "This commit breaks a test"
  commit fixed ok "Fixed the test"
  commit crash crash "This commit crashes at start"
  commit unhealthy fail "This commit answers 500 on /health"
  mv "$out/commits.tmp" "$out/commits"
fi

while read -r name sha; do
  if docker image inspect "vigie-demo:$sha" >/dev/null 2>&1; then
    continue
  fi
  ctx=$(mktemp -d)
  cp "$bin" "$ctx/demo-app"
  mkdir "$ctx/app"
  git -C "$repo" archive "$sha" | tar -x -C "$ctx/app"
  echo "$sha" > "$ctx/app/sha"
  cp "$here/demo-app/Dockerfile" "$ctx/Dockerfile"
  if ! docker build -q -t "vigie-demo:$sha" --label "vigie.dev/demo-commit=$name" "$ctx" >"$ctx.log" 2>&1; then
    cat "$ctx.log" >&2
    exit 1
  fi
  rm -rf "$ctx" "$ctx.log"
  echo "built vigie-demo:${sha:0:7} ($name)" >&2
done < "$out/commits"

# vigie-demo-hc:<sha>: the same with a Docker HEALTHCHECK (for the good and unhealthy commits).
for name in good unhealthy; do
  sha=$(awk -v n="$name" '$1==n{print $2}' "$out/commits")
  docker image inspect "vigie-demo-hc:$sha" >/dev/null 2>&1 && continue
  printf 'FROM vigie-demo:%s\nHEALTHCHECK --interval=1s --timeout=2s --retries=2 --start-period=1s CMD ["/demo-app", "check"]\n' "$sha" |
    docker build -q -t "vigie-demo-hc:$sha" - >/dev/null 2>&1
done

# The runtime of the git-checkout artifact (code mounted at /app) and the hook image:
# the binary of the first commit's image, whatever the commit.
good=$(awk '$1=="good"{print $2}' "$out/commits")
for tag in vigie-demo-runtime:latest vigie-demo:latest; do
  docker image inspect "$tag" >/dev/null 2>&1 || docker tag "vigie-demo:$good" "$tag"
done
