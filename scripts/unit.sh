#!/usr/bin/env bash
# Runs each cmocka unit test binary given; fails when any fails.
set -u
fail=0
for t in "$@"; do
    echo "== $t"
    if ! "$t"; then fail=1; fi
done
exit $fail
