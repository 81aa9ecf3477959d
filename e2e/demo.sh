#!/usr/bin/env bash
# `make demo`: Vigie replacing a VM's deploy scripts, on this machine's Docker engine.
#
# Builds a tiny demo app image for each commit of a local git repository, starts
# `vigie run` on examples/demo/, deploys the good commit to preprod (port 8500),
# validates it, deploys a bad one, posts a red CI verdict and shows the rollback.
# Then promotes the good commit to prod (port 8501) with `vigie promote`, DEPLOY typed.
# Ends with the web view's address: `vigie run` keeps running, and the page shows the
# rollback (log in with the token printed to act from the page).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
vigie="$top/target/debug/vigie"
work=${DEMO_DIR:-/tmp/vigie-demo}
listen=${DEMO_LISTEN:-127.0.0.1:18080}
export VIGIE_WEBHOOK_SECRET=${VIGIE_WEBHOOK_SECRET:-demo-secret}
export VIGIE_ENDPOINT="http://$listen"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
status() { "$vigie" status --state "$work/state.json"; }
phase() { "$vigie" status --state "$work/state.json" -o json 2>/dev/null | python3 -c "import json,sys; print(next((r['phase'] for r in json.load(sys.stdin) if r['environment']=='$1'), ''))" 2>/dev/null || true; }
wait_phase() { # env phase
  for _ in $(seq 1 300); do
    [ "$(phase "$1")" = "$2" ] && return 0
    sleep 0.2
  done
  echo "timed out waiting for $1 to be $2; log: $work/vigie.log" >&2
  status >&2
  return 1
}
serve() { curl -s --max-time 2 "http://127.0.0.1:$1/" || echo "(nothing answers on $1)"; }

say "Docker engine"
"$here/docker.sh" ensure
docker version --format 'Docker engine {{.Server.Version}}'

say "Demo repository and one image per commit (built locally, no registry)"
"$here/demo-repo.sh" "$work"
good=$(awk '$1=="good"{print $2}' "$work/commits")
bad=$(awk '$1=="bad"{print $2}' "$work/commits")
git -C "$work/repo" log --oneline

# A clean slate: the previous demo's process, containers and state.
if [ -f "$work/vigie.pid" ]; then kill "$(cat "$work/vigie.pid")" 2>/dev/null || true; fi
ids=$(docker ps -aq --filter label=app.kubernetes.io/managed-by=vigie --filter label=vigie.dev/code-location=demo-app)
[ -z "$ids" ] || docker rm -f $ids >/dev/null
rm -rf "$work/manifests" "$work/state.json" "$work/vigie.log"
mkdir -p "$work/manifests"
for f in "$top"/examples/demo/*.yaml; do
  sed -e "s|file:///tmp/vigie-demo/repo|file://$work/repo|" -e "s|revision: main|revision: $good|" "$f" > "$work/manifests/$(basename "$f")"
done

# The web view's login: one person, a fresh token each demo.
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'demo:%s\n' "$token" > "$work/web-tokens"
chmod 600 "$work/web-tokens"

say "vigie run --manifests $work/manifests --state $work/state.json --listen $listen --web-token-file $work/web-tokens"
# vigie run outlives this script when the demo succeeds: it must not inherit the
# caller's descriptors (a lock held with flock around `make demo` would stay held).
(
  for fd in /proc/$BASHPID/fd/*; do
    n=${fd##*/}
    if [ "$n" -gt 2 ]; then eval "exec $n>&-" 2>/dev/null || true; fi
  done
  exec "$vigie" run --manifests "$work/manifests" --state "$work/state.json" --listen "$listen" --interval 1 \
    --web-token-file "$work/web-tokens" >"$work/vigie.log" 2>&1
) &
echo $! > "$work/vigie.pid"
# Stopped if the demo fails; left running (for the web view) when it succeeds.
trap 'kill "$(cat "$work/vigie.pid")" 2>/dev/null || true' EXIT

say "1. The good commit ${good:0:7} is deployed to preprod first, then CI is awaited"
wait_phase preprod Verifying
status
echo "preprod answers: $(serve 8500)"

say "2. CI says success for ${good:0:7}: vigie ci report --location demo-app --sha ${good:0:7}… --state success"
"$vigie" ci report --location demo-app --sha "$good" --state success --url "https://ci.example/demo/${good:0:7}"
wait_phase preprod Validated
status

say "3. main moves to the bad commit ${bad:0:7}: it serves before CI has finished"
sed -i "s|revision: $good|revision: $bad|" "$work/manifests/releases.yaml"
wait_phase preprod Verifying
echo "preprod answers: $(serve 8500)"
status

say "4. CI says failure for ${bad:0:7}: Vigie rolls back to ${good:0:7}"
start=$(date +%s.%N)
"$vigie" ci report --location demo-app --sha "$bad" --state failure --url "https://ci.example/demo/${bad:0:7}" --failed-check tests
until serve 8500 | grep -q "$good"; do sleep 0.05; done
end=$(date +%s.%N)
wait_phase preprod RolledBack
echo "preprod answers: $(serve 8500)"
python3 -c "print(f'previous SHA serving again {float($end)-float($start):.2f} s after the red verdict')"
status
"$vigie" status --state "$work/state.json" -o json | python3 -c "
import json,sys
for r in json.load(sys.stdin):
    if r['environment']=='preprod':
        print('CI:', r['ciState'], r['ciUrl']); print('quarantined:', ', '.join(s[:7] for s in r['quarantined']))"

say "5. prod takes only SHAs validated in preprod: vigie promote, typed DEPLOY"
echo "(the bad commit is refused:)"
"$vigie" promote demo-app --to prod --sha "$bad" --yes --state "$work/state.json" || true
echo DEPLOY | "$vigie" promote demo-app --to prod --reason demo --state "$work/state.json"
wait_phase prod Validated
echo "prod answers: $(serve 8501)"
status
"$vigie" history demo-app --env prod --state "$work/state.json"

say "6. The web view shows it all: the grid, and preprod's rollback on its Release page"
page=$(curl -s --max-time 5 "http://$listen/releases/default/demo-app-preprod")
if ! grep -q 'data-phase="rolled-back"' <<<"$page" || ! grep -q "quarantined <code title=\"$bad\"" <<<"$page"; then
  echo "the Release page does not show the rollback; log: $work/vigie.log" >&2
  exit 1
fi
echo "the Release page shows the rollback of ${bad:0:7} to ${good:0:7}"
trap - EXIT

say "Done. vigie run keeps running (pid $(cat "$work/vigie.pid")) for the web view:"
echo "  http://$listen/"
echo "  http://$listen/releases/default/demo-app-preprod   (the rollback)"
echo "  log in as demo with the token: $token"
echo "Stop it and remove the containers with:"
echo "  kill \$(cat $work/vigie.pid); docker rm -f \$(docker ps -aq --filter label=vigie.dev/code-location=demo-app)"
