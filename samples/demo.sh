#!/usr/bin/env bash
# The airlift walk-through: guestbook bundle -> signed archive -> internal registry -> deployable YAML.
#
# Starts two local registries on 127.0.0.1 (an "internet" one over plain HTTP, an "internal" one
# with TLS from a CA made here and htpasswd basic auth), seeds the sample images, then runs every
# step an operator would, printing each command. Everything lives in a temp dir removed at exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
airlift="${AIRLIFT:-$root/target/release/airlift}"
[ -x "$airlift" ] || { echo "build first: make setup (or cargo build --release)"; exit 1; }

work="$(mktemp -d /tmp/airlift-demo.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step() { show "$@"; "$@"; }
# A step whose output goes to a file: the redirect is part of what the operator types.
step_into() { local out=$1; shift; show "$@" ">" "$out"; "$@" > "$out"; }

free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( (RANDOM % 20000) + 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; exit 1
}

start_registry() { # name port [tls]
  local name=$1 port=$2 tls=${3:-}
  mkdir -p "$work/$name/data"
  {
    echo "version: 0.1"
    echo "log: {level: error}"
    echo "storage: {filesystem: {rootdirectory: $work/$name/data}, delete: {enabled: true}}"
    echo "http:"
    echo "  addr: 127.0.0.1:$port"
    if [ -n "$tls" ]; then
      echo "  tls: {certificate: $work/tls/server.crt, key: $work/tls/server.key}"
      echo "auth: {htpasswd: {realm: airlift-demo, path: $work/tls/htpasswd}}"
    fi
  } > "$work/$name/config.yml"
  docker-registry serve "$work/$name/config.yml" > "$work/$name/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
    sleep 0.1
  done
  cat "$work/$name/log"; echo "registry $name did not start"; exit 1
}

echo "== airlift demo (work dir $work)"
mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=airlift demo CA" \
  -keyout "$work/tls/ca.key" -out "$work/tls/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/tls/server.key" -out "$work/tls/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$work/tls/san.ext"
openssl x509 -req -in "$work/tls/server.csr" -CA "$work/tls/ca.crt" -CAkey "$work/tls/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/tls/san.ext" -out "$work/tls/server.crt" 2>/dev/null
password="demo-$RANDOM$RANDOM"
htpasswd -Bbn operator "$password" > "$work/tls/htpasswd"

internet=127.0.0.1:$(free_port); start_registry internet "${internet#*:}"
internal=127.0.0.1:$(free_port); start_registry internal "${internal#*:}" tls
echo "internet registry: $internet (plain HTTP)    internal registry: $internal (TLS + basic auth)"

echo; echo "== connected side"
for img in google_samples/gb-frontend:v5:frontend google_samples/gb-redis-follower:v2:redis-follower library/redis:6.0.5:redis; do
  ref="${img%:*}"; dir="${img##*:}"
  "$airlift" push -i "$internet/$ref" -f "$here/images/$dir" > /dev/null
done
echo "(seeded three stand-in images into $internet)"
cp -r "$here/guestbook" "$work/bundle"
mkdir -p "$work/bundle/.imgpkg"   # git keeps no empty directories: the lock is written here
sed -i "s#REGISTRY#$internet#g" "$work/bundle/config/"*.yaml
cd "$work"
step "$airlift" lock -f bundle/config --lock-output bundle/.imgpkg/images.yml -q
step "$airlift" push -b "$internet/guestbook-bundle:1.0" -f bundle
step "$airlift" keygen --out release
step "$airlift" export -b "$internet/guestbook-bundle:1.0" -o guestbook-1.0.tar --sign-key release.key

echo; echo "== air-gapped side (the archive and release.pub travel; nothing else)"
step "$airlift" verify guestbook-1.0.tar --trust release.pub
show export AIRLIFT_REGISTRY_HOSTNAME="$internal" AIRLIFT_REGISTRY_USERNAME=operator "AIRLIFT_REGISTRY_PASSWORD=<the internal registry password>"
export AIRLIFT_REGISTRY_HOSTNAME="$internal" AIRLIFT_REGISTRY_USERNAME=operator AIRLIFT_REGISTRY_PASSWORD="$password"
step "$airlift" import guestbook-1.0.tar --to-repo "$internal/apps/guestbook" --trust release.pub \
  --registry-ca-cert-path tls/ca.crt --lock-output guestbook.lock.yml -q
step cat guestbook.lock.yml
step "$airlift" pull -b "$internal/apps/guestbook:1.0" -o deploy --registry-ca-cert-path tls/ca.crt
step_into final.yaml "$airlift" rewrite -f deploy/config -f deploy/.imgpkg/images.yml
echo; echo "images in the YAML to apply inside the air gap:"
grep -E '^\s*(- )?image:' final.yaml | sed 's/^ */  /'
if grep -E '^\s*(- )?image:' final.yaml | grep -v "$internal/apps/guestbook@sha256:" > /dev/null; then
  echo "FAIL: some image does not point at the internal registry"; exit 1
fi
echo; echo "OK: every image points at $internal/apps/guestbook by digest"
