#!/bin/sh
# Make the quickstart's recipe: repos/coop-cloud/hello with two releases and a pull
# request (refs/pull/1/head, as Gitea publishes it), and its image, built offline from
# Debian's busybox-static with `docker import` (no registry needed).
# Usage: sh doc/examples/make-hello-recipe.sh [REPOS_DIR]   (default: repos)
set -eu
repos=${1:-repos}
repo="$repos/coop-cloud/hello"
[ -x /bin/busybox ] || { echo "needs Debian's busybox-static (/bin/busybox)" >&2; exit 1; }

image() {  # image TAG: a busybox rootfs serving /www with httpd
  docker image inspect "ccci-example/hello:$1" >/dev/null 2>&1 && return
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/www" "$root/data" "$root/tmp"
  cp /bin/busybox "$root/bin/"
  for a in sh httpd wget cat; do ln -s busybox "$root/bin/$a"; done
  echo "hello $1" > "$root/www/index.html"
  tar -C "$root" -c . | docker import - "ccci-example/hello:$1" >/dev/null
  rm -rf "$root"
}

release() {  # release VERSION IMAGE_TAG
  cat > compose.yml <<YAML
version: "3.8"
services:
  app:
    image: ccci-example/hello:$2
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 2s
      retries: 3
    volumes:
      - data:/data
    deploy:
      update_config:
        failure_action: rollback
        order: stop-first
      labels:
        - "coop-cloud.\${STACK_NAME}.version=$1"
        - "coop-cloud.\${STACK_NAME}.timeout=120"
        - "traefik.http.services.\${STACK_NAME}.loadbalancer.server.port=8080"
        # a tiny app: watch it 10 s after convergence instead of the default 30 s
        - "ccci.settle=10"
volumes:
  data:
YAML
  printf 'TYPE=hello\nDOMAIN=hello.example.com\nCOMPOSE_FILE="compose.yml"\n' > .env.sample
  mkdir -p release && echo "Release $1." > "release/$1"
  hooks
  git add -A && git -c user.name=me -c user.email=me@example.com commit -qm "release $1"
}

hooks() {  # the recipe's own data checks: a note written through the app, read back
  mkdir -p tests
  cat > tests/ccci-seed <<'SH'
#!/bin/sh
set -e
c=$(docker ps -q -f "label=com.docker.swarm.service.name=${STACK_NAME}_app" | head -n1)
docker exec "$c" sh -c 'echo kept > /data/note'
SH
  cat > tests/ccci-verify <<'SH'
#!/bin/sh
c=$(docker ps -q -f "label=com.docker.swarm.service.name=${STACK_NAME}_app" | head -n1)
test "$(docker exec "$c" cat /data/note)" = kept
SH
  chmod +x tests/ccci-seed tests/ccci-verify
}

for tag in 1 2 3; do image $tag; done
mkdir -p "$repo" && cd "$repo"
git init -q -b main .
release 1.0.0+1 1 && git tag 1.0.0+1
release 1.1.0+1 2 && git tag 1.1.0+1
git checkout -q -b pr1
release 1.2.0+1 3
git update-ref refs/pull/1/head HEAD
git checkout -q main
echo "made $repo: releases 1.0.0+1, 1.1.0+1; pull request 1 (refs/pull/1/head) → 1.2.0+1"
