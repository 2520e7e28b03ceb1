#!/usr/bin/env bash
# Runs the -O0 -g daemon (build/debug) under valgrind memcheck; `make valgrind` points the
# integration suite at this script. Any definite leak or memory error makes the daemon
# exit 99 and prints a report the suite's stop() turns into a failure.
here="$(cd "$(dirname "$0")/.." && pwd)"
exec valgrind -q --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --error-exitcode=99 "$here/build/debug/agentcastd" "$@"
