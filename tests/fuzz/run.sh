#!/usr/bin/env bash
# Runs libFuzzer targets: `tests/fuzz/run.sh SECONDS BINDIR TARGET...` (make fuzz, make
# fuzz-test). For each target: replays tests/fuzz/regressions/<target>/ (inputs that failed
# once; each passes once its bug is fixed), then fuzzes for SECONDS on a working copy of
# tests/fuzz/corpus/<target> kept in BINDIR/corpus/<target> (new inputs go there, never into
# the committed corpus) and prints the executions. Exits non-zero when any target crashes,
# leaks, times out or breaks an invariant; the input is then in BINDIR/artifacts/<target>/
# and the log in BINDIR/logs/<target>.log.
set -uo pipefail
cd "$(dirname "$0")/../.."

if [ $# -lt 3 ]; then
    echo "usage: $0 SECONDS BINDIR TARGET..." >&2
    exit 2
fi
secs=$1
bindir=$2
shift 2

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "$@"; do
    exe=$bindir/fuzz_$t
    work=$bindir/corpus/$t
    art=$bindir/artifacts/$t
    log=$bindir/logs/$t.log
    mkdir -p "$work" "$art" "$bindir/logs"
    cp tests/fuzz/corpus/"$t"/* "$work"/

    regressions=()
    if [ -d tests/fuzz/regressions/"$t" ]; then
        for f in tests/fuzz/regressions/"$t"/*; do
            [ -f "$f" ] && regressions+=("$f")
        done
    fi
    # Each saved input alone, so the report names every one that still fails.
    for f in "${regressions[@]}"; do
        if ! "$exe" "$f" >"$log" 2>&1; then
            echo "fuzz $t: regression input $f fails:" >&2
            grep -E 'ERROR|SUMMARY|invariant' "$log" | head -5 >&2
            status=1
        fi
    done

    dict=()
    [ -f tests/fuzz/dict/"$t".dict ] && dict=(-dict=tests/fuzz/dict/"$t".dict)
    "$exe" -max_total_time="$secs" -timeout=10 -print_final_stats=1 -artifact_prefix="$art"/ \
        "${dict[@]}" "$work" >"$log" 2>&1
    rc=$?
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
    printf 'fuzz %-8s %10s executions  (budget %ss, %s, corpus %s files)\n' "$t" "${execs:-?}" \
        "$secs" "${cov:-cov: ?}" "$(ls "$work" | wc -l)"
    if [ $rc -ne 0 ]; then
        echo "fuzz $t: FAILED (exit $rc); input in $art/, log $log:" >&2
        grep -vE '^#[0-9]+|^INFO:' "$log" | head -60 >&2
        status=1
    fi
done
exit $status
