#!/usr/bin/env bash
# Builds a container image of vigie without pulling anything: a root filesystem holding
# the binary, the shared libraries it links (as ldd lists them), CA certificates and a
# passwd entry for the non-root user the chart runs as, imported with `docker import`.
#
#   e2e/image.sh [BINARY] [TAG]     defaults: target/release/vigie, vigie:0.1.0
set -euo pipefail
bin=${1:-target/release/vigie}
tag=${2:-vigie:0.1.0}
[ -x "$bin" ] || { echo "image.sh: $bin is not built (cargo build --release)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/vigie"
# The loader and every library the binary links, at the same paths.
for lib in $(ldd "$bin" | grep -oE '/[^ ]+\.so[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
echo 'root:x:0:0:root:/root:/sbin/nologin' > "$root/etc/passwd"
echo 'vigie:x:65532:65532:vigie:/tmp:/sbin/nologin' >> "$root/etc/passwd"
echo 'vigie:x:65532:' > "$root/etc/group"
tar -C "$root" -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/vigie"]' \
  --change 'USER 65532:65532' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  - "$tag" >/dev/null
echo "$tag"
