#!/bin/sh
# Placeholder until a host runs the Swarm job kinds: show the upgrade path.
set -eu
base=$(git describe --tags --abbrev=0 2>/dev/null || echo "(no release tag)")
echo "would upgrade recipe ${RECIPE:-?} from $base to ${ZUUL_COMMIT:-?}"
