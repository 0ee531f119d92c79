#!/bin/sh
# Make this worker host's key and certificate signing request in ./tls (see workers/README.md).
# Usage: sh workers/make-worker-key.sh [NAME]   (default: the host name)
set -eu
name=${1:-$(hostname)}
ccci-gate tls request --name "$name" tls
