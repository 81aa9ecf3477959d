#!/usr/bin/env bash
# `make demo-dagster`: a Dagster code location deployed by `vigie run` on this
# machine's Docker engine, judged by a real Dagster webserver (images built locally
# by e2e/dagster.sh: no registry).
#
# A git repository with two commits of a department's code location: one whose
# definitions load, one whose module raises at import. The good one is deployed and
# validated; the broken one is deployed first, passes gRPC health, fails to load in
# the webserver, and is rolled back with its Python error: the webserver serves the
# good definitions again. Ends with the addresses of Dagster's UI and Vigie's page;
# everything keeps running until `make stop` (or the commands printed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
vigie="$top/target/debug/vigie"
work=${DEMO_DIR:-/tmp/vigie-demo-dagster}
listen=${DEMO_LISTEN:-127.0.0.1:18090}
dagster_port=${DEMO_DAGSTER_PORT:-13000}
network=vigie-demo-dagster
export VIGIE_WEBHOOK_SECRET=${VIGIE_WEBHOOK_SECRET:-demo-secret}
export VIGIE_ENDPOINT="http://$listen"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
status() { "$vigie" status --state "$work/state.json"; }
phase() { "$vigie" status --state "$work/state.json" -o json 2>/dev/null | python3 -c "import json,sys; print(next((r['phase'] for r in json.load(sys.stdin) if r['environment']=='dev'), ''))" 2>/dev/null || true; }
wait_phase() { # phase
  for _ in $(seq 1 600); do
    [ "$(phase)" = "$1" ] && return 0
    sleep 0.2
  done
  echo "timed out waiting for dev to be $1; log: $work/vigie.log" >&2
  status >&2
  return 1
}
graphql() { curl -s --max-time 60 -H 'Content-Type: application/json' -d "$1" "http://127.0.0.1:$dagster_port/graphql"; }
# What the webserver serves for location `sales`: its assets, or its error.
served() {
  graphql '{"query":"{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename ... on RepositoryLocation { repositories { assetNodes { assetKey { path } } } } ... on PythonError { causes { message } } } } } } }"}' |
    python3 -c "
import json,sys
for e in json.load(sys.stdin)['data']['workspaceOrError']['locationEntries']:
    l=e['locationOrLoadError'] or {}
    if l.get('__typename')=='RepositoryLocation':
        print(e['name']+': assets', ', '.join('/'.join(a['assetKey']['path']) for r in l['repositories'] for a in r['assetNodes']))
    else:
        print(e['name']+':', ' '.join(c['message'].strip() for c in l.get('causes') or []) or l.get('__typename'))"
}

say "Docker engine, and Dagster's base image (built once, then cached)"
"$here/docker.sh" ensure
base=$("$here/dagster.sh" base)
echo "$base"

say "A code location's repository: a commit that loads, one that raises at import"
if [ -f "$work/vigie.pid" ]; then kill "$(cat "$work/vigie.pid")" 2>/dev/null || true; fi
ids=$(docker ps -aq --filter "network=$network")
[ -z "$ids" ] || docker rm -f $ids >/dev/null
rm -rf "$work"
mkdir -p "$work/repo" "$work/manifests" "$work/workspace" "$work/home"
git -C "$work/repo" init -q -b main
git -C "$work/repo" -c user.name=demo -c user.email=demo@example.org commit -q --allow-empty -m "start"
cat > "$work/repo/defs.py" <<'PY'
import dagster as dg


@dg.asset
def raw_orders():
    return [1, 2, 3]


@dg.asset
def order_count(raw_orders):
    return len(raw_orders)


defs = dg.Definitions(assets=[raw_orders, order_count])
PY
git -C "$work/repo" add defs.py
git -C "$work/repo" -c user.name=demo -c user.email=demo@example.org commit -q -m "sales: order count"
good=$(git -C "$work/repo" rev-parse HEAD)
"$here/dagster.sh" location sales "$good" "$work/repo" >/dev/null
cat > "$work/repo/defs.py" <<'PY'
import dagster as dg
import pandas  # not in the image: the definitions cannot load

defs = dg.Definitions(assets=[])
PY
git -C "$work/repo" -c user.name=demo -c user.email=demo@example.org commit -q -am "sales: use pandas"
broken=$(git -C "$work/repo" rev-parse HEAD)
"$here/dagster.sh" location sales "$broken" "$work/repo" >/dev/null
git -C "$work/repo" log --oneline

say "Dagster's webserver on network $network, reading the workspace Vigie writes"
docker network inspect "$network" >/dev/null 2>&1 || docker network create "$network" >/dev/null
echo 'load_from: []' > "$work/workspace/workspace.yaml"
docker run -d --name vigie-demo-dagster-webserver --network "$network" \
  -p "127.0.0.1:$dagster_port:3000" -v "$work/workspace:/opt/dagster/workspace:ro" \
  "$base" dagster-webserver -h 0.0.0.0 -p 3000 -w /opt/dagster/workspace/workspace.yaml >/dev/null
until curl -s --max-time 2 "http://127.0.0.1:$dagster_port/server_info" >/dev/null; do sleep 0.5; done
echo "webserver: http://127.0.0.1:$dagster_port/"

cat > "$work/manifests/platform.yaml" <<YAML
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: dev}
spec:
  backend: {docker: {}}
  verification: {timeout: 10m, healthTimeout: 2m}
  dagster:
    graphqlUrl: http://127.0.0.1:$dagster_port/graphql
    workspace: {file: $work/workspace/workspace.yaml}
    network: $network
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: sales}
spec:
  repo: {url: "file://$work/repo"}
  ci: {webhook: {}}
  artifact: {image: {template: "vigie-dagster-sales:{sha}"}}
  container:
    ports: [{containerPort: 4000, hostPort: 14000}]
  dagster: {module: defs}
YAML
release() { printf 'apiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {name: sales-dev}\nspec: {codeLocation: sales, environment: dev, revision: "%s"}\n' "$1" > "$work/manifests/release.yaml"; }
release "$good"

say "vigie run --manifests $work/manifests --state $work/state.json --listen $listen"
(
  for fd in /proc/$BASHPID/fd/*; do
    n=${fd##*/}
    if [ "$n" -gt 2 ]; then eval "exec $n>&-" 2>/dev/null || true; fi
  done
  exec "$vigie" run --manifests "$work/manifests" --state "$work/state.json" --listen "$listen" --interval 1 \
    >"$work/vigie.log" 2>&1
) &
echo $! > "$work/vigie.pid"
trap 'kill "$(cat "$work/vigie.pid")" 2>/dev/null || true' EXIT

say "1. ${good:0:7} is deployed: the code server starts, Vigie lists it and the webserver loads it"
wait_phase Verifying
cat "$work/workspace/workspace.yaml"
served
"$vigie" ci report --location sales --sha "$good" --state success --url "https://ci.example/sales/${good:0:7}"
wait_phase Validated
status

say "2. main moves to ${broken:0:7}: it starts and answers gRPC health, but its definitions do not load"
start=$(date +%s.%N)
release "$broken"
wait_phase RolledBack
end=$(date +%s.%N)
python3 -c "print(f'rolled back {float($end)-float($start):.1f} s after the change, without waiting for CI')"
"$vigie" history sales --env dev --state "$work/state.json"

say "3. The webserver serves ${good:0:7}'s definitions again"
until served | grep -q "assets order_count"; do sleep 0.5; done
served
trap - EXIT

say "Done. Everything keeps running:"
echo "  Dagster:  http://127.0.0.1:$dagster_port/locations"
echo "  Vigie:    http://$listen/releases/default/sales-dev   (the rollback and its Python error)"
echo "Stop it with: make stop; docker rm -f \$(docker ps -aq --filter network=$network); docker network rm $network"
