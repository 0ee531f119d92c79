#!/bin/sh
# Lint a recipe checkout; list every problem, not just the first.
set -u
problems=0
say() { printf '%s\n' "$*"; }
fail() { say "PROBLEM: $*"; problems=$((problems + 1)); }
say "recipe ${ZUUL_PROJECT:-?} at ${ZUUL_COMMIT:-?} (${ZUUL_REF:-no ref})"
[ -f compose.yml ] || fail "compose.yml is missing"
[ -f .env.sample ] || fail ".env.sample is missing"
if [ -f compose.yml ]; then
  grep -q '^services:' compose.yml || fail "compose.yml has no services"
  if grep -Eq 'image:[[:space:]]*[^[:space:]]+:latest([[:space:]]|$)' compose.yml; then
    fail "compose.yml uses a :latest tag"
  fi
fi
if [ "$problems" -gt 0 ]; then say "$problems problem(s)"; exit 1; fi
say "lint ok"
