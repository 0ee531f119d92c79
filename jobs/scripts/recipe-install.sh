#!/bin/sh
# Placeholder until a host runs the Swarm job kinds: show what would be deployed.
set -eu
echo "would cold-install recipe ${RECIPE:-?} from ${ZUUL_COMMIT:-?}"
test -f compose.yml
