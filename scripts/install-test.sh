#!/usr/bin/env bash
# `make install` into a temporary DESTDIR, then uses what it installed as an operator and an
# embedder would: the shared library's soname and exported symbols (only the ac_* functions
# of agentcast.h), examples/embed.c built with `pkg-config --cflags --libs agentcast` against
# the shared and the static library and run, the manual page through `man -l`, the systemd
# unit through `systemd-analyze verify`, and the installed daemon started from the installed
# example configuration (JSON logs, sd_notify READY=1/STOPPING=1, /healthz, the installed
# pages), then `make uninstall`. Exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=/usr/local
stage=$(mktemp -d)
work=$(mktemp -d)
daemon_pid=
notify_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null || true
    [ -n "$notify_pid" ] && kill -9 "$notify_pid" 2>/dev/null || true
    rm -rf "$stage" "$work"
}
trap cleanup EXIT
fail() {
    echo "install-test: FAIL: $*" >&2
    exit 1
}
ok() { echo "install-test: ok: $*"; }

make --no-print-directory install PREFIX="$PREFIX" DESTDIR="$stage" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; fail "make install"; }
root="$stage$PREFIX"
for f in bin/agentcastd lib/libagentcast.a lib/libagentcast.so lib/libagentcast.so.0 \
    lib/pkgconfig/agentcast.pc include/agentcast.h share/man/man8/agentcastd.8 \
    share/agentcast/web/index.html share/agentcast/clients/js/agentcast.js \
    share/agentcast/agentcast.conf.example lib/systemd/system/agentcastd.service \
    etc/agentcast/agentcast.conf; do
    [ -e "$root/$f" ] || fail "make install did not install $PREFIX/$f"
done
ok "make install DESTDIR=$stage PREFIX=$PREFIX installed every file"

# PREFIX=/usr puts the configuration in /etc, not /usr/etc (a dry run).
dry=$(make --no-print-directory -n install PREFIX=/usr DESTDIR=/stage)
grep -q ' /stage/etc/agentcast$' <<<"$dry" || fail "PREFIX=/usr does not use /etc"
grep -q '/stage/usr/lib/systemd/system/agentcastd.service' <<<"$dry" ||
    fail "PREFIX=/usr does not put the unit in /usr/lib/systemd/system"
ok "PREFIX=/usr: configuration in /etc/agentcast, unit in /usr/lib/systemd/system"

# ---- the shared library: soname, symlinks, exported symbols --------------------------
soname=$(readelf -d "$root/lib/libagentcast.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = libagentcast.so.0 ] || fail "soname is '$soname', not libagentcast.so.0"
real=$(readlink "$root/lib/libagentcast.so.0")
[[ "$real" =~ ^libagentcast\.so\.0\.[0-9]+\.[0-9]+$ ]] || fail "libagentcast.so.0 -> $real"
[ -f "$root/lib/$real" ] || fail "$real is not installed"
# Every defined dynamic symbol but the version node, against the functions the header
# declares (comments stripped; function-pointer typedefs do not match `name(`).
nm -D --defined-only "$root/lib/libagentcast.so" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' |
    sort -u >"$work/exported"
perl -0777 -pe 's{/\*.*?\*/}{}gs' include/agentcast.h | grep -oE '\bac_[a-z0-9_]+[[:space:]]*\(' |
    tr -d '( \t' | sort -u >"$work/declared"
if ! diff -u "$work/declared" "$work/exported"; then
    fail "libagentcast.so must export exactly the functions of agentcast.h (diff above)"
fi
ok "libagentcast.so: soname $soname -> $real, exports exactly the $(wc -l <"$work/declared") ac_* functions of agentcast.h"

# ---- pkg-config: examples/embed.c against the installed tree, shared and static ------
export PKG_CONFIG_PATH="$root/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage"
pkg-config --exists agentcast || fail "pkg-config does not find agentcast.pc"
cflags=$(pkg-config --cflags agentcast)
libs=$(pkg-config --libs agentcast)
# shellcheck disable=SC2086
cc -Wall -Werror -o "$work/embed-shared" examples/embed.c $cflags $libs ||
    fail "embed.c with pkg-config --cflags --libs agentcast (shared)"
# (Outputs are captured before grep -q: with pipefail, a writer cut off by grep's early exit
# would fail the pipeline.)
grep -q 'NEEDED.*libagentcast.so.0' <<<"$(readelf -d "$work/embed-shared")" ||
    fail "embed-shared does not link libagentcast.so.0"
grep -q "$root/lib/libagentcast.so.0" <<<"$(LD_LIBRARY_PATH="$root/lib" ldd "$work/embed-shared")" ||
    fail "embed-shared does not load the installed libagentcast.so.0"
LD_LIBRARY_PATH="$root/lib" timeout 120 "$work/embed-shared" >"$work/embed-shared.out" 2>&1 ||
    { tail -20 "$work/embed-shared.out" >&2; fail "embed-shared exited non-zero"; }
ok "examples/embed.c built with pkg-config --cflags --libs agentcast ($libs) runs on libagentcast.so.0"

# -l:libagentcast.a: the archive even though the .so sits next to it.
static_libs=$(pkg-config --static --libs agentcast | sed 's/-lagentcast\b/-l:libagentcast.a/')
# shellcheck disable=SC2086
cc -Wall -Werror -o "$work/embed-static" examples/embed.c $cflags $static_libs ||
    fail "embed.c with pkg-config --static --libs agentcast"
if grep -q 'NEEDED.*libagentcast' <<<"$(readelf -d "$work/embed-static")"; then
    fail "embed-static still needs libagentcast.so"
fi
timeout 120 "$work/embed-static" >"$work/embed-static.out" 2>&1 ||
    { tail -20 "$work/embed-static.out" >&2; fail "embed-static exited non-zero"; }
ok "examples/embed.c linked statically with pkg-config --static --libs agentcast runs"

# ---- the manual page: renders without warnings, names every flag of --help -----------
man_page="$root/share/man/man8/agentcastd.8"
LC_ALL=C MANWIDTH=100 man --warnings -l "$man_page" >"$work/man.txt" 2>"$work/man.err" ||
    fail "man -l $man_page"
[ ! -s "$work/man.err" ] || { cat "$work/man.err" >&2; fail "man -l warned"; }
"$root/bin/agentcastd" --help | grep -oE '^  --[a-z][a-z0-9-]*' | sed 's/^  //' >"$work/help-flags"
[ "$(wc -l <"$work/help-flags")" -gt 30 ] || fail "--help lists too few flags"
while read -r flag; do
    grep -qE -- "^ +$flag( |$)" "$work/man.txt" || fail "the man page lacks $flag (listed by --help)"
done <"$work/help-flags"
ok "man -l agentcastd.8 renders without warnings and documents all $(wc -l <"$work/help-flags") flags of --help"

# ---- the systemd unit ------------------------------------------------------------------
unit="$root/lib/systemd/system/agentcastd.service"
grep -q '^Type=notify$' "$unit" || fail "the unit is not Type=notify"
for d in DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes LimitNOFILE=; do
    grep -q "^$d" "$unit" || fail "the unit lacks $d"
done
grep -q "^ExecStart=$PREFIX/bin/agentcastd --config $PREFIX/etc/agentcast/agentcast.conf$" "$unit" ||
    fail "ExecStart does not run the installed daemon with the installed config"
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify checks that ExecStart exists and that man:agentcastd(8) resolves: point both
    # at the staged tree. Any output (an unknown key is only a warning) is a failure.
    mkdir -p "$work/unit"
    sed "s|$PREFIX/bin/agentcastd|$root/bin/agentcastd|" "$unit" >"$work/unit/agentcastd.service"
    MANPATH="$root/share/man" systemd-analyze verify "$work/unit/agentcastd.service" \
        >"$work/verify.out" 2>&1 || { cat "$work/verify.out" >&2; fail "systemd-analyze verify"; }
    [ ! -s "$work/verify.out" ] || { cat "$work/verify.out" >&2; fail "systemd-analyze verify warned"; }
    exposure=$(systemd-analyze security --offline=yes "$work/unit/agentcastd.service" 2>&1 |
        sed -n 's/.*Overall exposure level for agentcastd.service: \([0-9.]*\).*/\1/p')
    ok "systemd-analyze verify agentcastd.service: clean; security exposure ${exposure:-?} (0 best, 10 worst)"
else
    echo "install-test: SKIP: systemd-analyze verify (systemd is not installed)"
fi

# ---- the installed daemon, from the installed example configuration ------------------
conf="$work/agentcast.conf"
sed -e "s|$PREFIX/share/agentcast|$root/share/agentcast|g" \
    -e 's|^listen = .*|listen = 127.0.0.1:0|' "$root/etc/agentcast/agentcast.conf" >"$conf"
AGENTCAST_JWT_SECRET=s3cret-from-env "$root/bin/agentcastd" --config "$conf" --check-config \
    >"$work/check.out" 2>&1 || { cat "$work/check.out" >&2; fail "--check-config of the installed example"; }
grep -q '^jwt-secret = \*\*\*\*\*\*\*\* .*# environment AGENTCAST_JWT_SECRET' "$work/check.out" ||
    fail "--check-config does not mask jwt-secret"
! grep -q s3cret-from-env "$work/check.out" || fail "--check-config printed the secret"
ok "--check-config accepts the installed example configuration and masks the secret"

command -v python3 >/dev/null 2>&1 || fail "python3 is required (scripts/deps.sh)"
sock="$work/notify.sock"
# A stand-in for systemd's notification socket: prints each datagram, ends at STOPPING=1.
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
while True:
    m = s.recv(4096).decode()
    print(m.replace("\n", " "), flush=True)
    if "STOPPING=1" in m:
        break
' "$sock" >"$work/notify.log" 2>&1 &
notify_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || fail "the notify socket stand-in did not start"

NOTIFY_SOCKET="$sock" AGENTCAST_JWT_SECRET=s3cret-from-env \
    "$root/bin/agentcastd" --config "$conf" 2>"$work/daemon.log" &
daemon_pid=$!
port=
for _ in $(seq 200); do
    port=$(sed -n 's/.*"event":"listening","addr":"127.0.0.1:\([0-9]*\)".*/\1/p' "$work/daemon.log")
    [ -n "$port" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; fail "the daemon exited"; }
    sleep 0.1
done
[ -n "$port" ] || { cat "$work/daemon.log" >&2; fail "no listening line from the installed daemon"; }
for _ in $(seq 100); do grep -q 'READY=1' "$work/notify.log" && break; sleep 0.1; done
grep -q 'READY=1' "$work/notify.log" || fail "no READY=1 on \$NOTIFY_SOCKET"
health=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/healthz")
[ "$health" = '{"status":"ok","broker":"up"} 200' ] || fail "/healthz answered: $health"
page=$(curl -sf "http://127.0.0.1:$port/") || fail "GET / failed"
grep -qi '<html' <<<"$page" || fail "/ does not serve the installed web/index.html"
curl -sf "http://127.0.0.1:$port/clients/js/agentcast.js" >/dev/null ||
    fail "/clients/js/agentcast.js is not served from the installed client files"
ok "the installed daemon runs from its config on port $port: READY=1, /healthz 200, pages served"

# The unit's ExecReload sends SIGHUP: the daemon must survive it and keep serving.
kill -HUP "$daemon_pid"
health=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/healthz")
[ "$health" = '{"status":"ok","broker":"up"} 200' ] || fail "after SIGHUP /healthz answered: $health"
ok "SIGHUP (systemctl reload) leaves the daemon serving"

kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=
[ "$rc" -eq 0 ] || { cat "$work/daemon.log" >&2; fail "the daemon exited $rc on SIGTERM"; }
wait "$notify_pid" || fail "no STOPPING=1 on \$NOTIFY_SOCKET: $(cat "$work/notify.log")"
notify_pid=
# log-format = json in the example: every line of stderr is one JSON object with ts, level.
python3 -c '
import json, sys
n = 0
for line in open(sys.argv[1]):
    o = json.loads(line)
    assert isinstance(o, dict) and "ts" in o and "level" in o and "event" in o, line
    n += 1
assert n >= 2, n
print(n)
' "$work/daemon.log" >"$work/nlines" || { cat "$work/daemon.log" >&2; fail "a log line is not a JSON object"; }
ok "SIGTERM: STOPPING=1, exit 0; all $(cat "$work/nlines") log lines are JSON objects"

# ---- make uninstall: only the operator's configuration stays --------------------------
make --no-print-directory uninstall PREFIX="$PREFIX" DESTDIR="$stage" >"$work/uninstall.log" 2>&1 ||
    { cat "$work/uninstall.log" >&2; fail "make uninstall"; }
left=$(cd "$stage" && find . \( -type f -o -type l \) | sort | tr '\n' ' ')
[ "$left" = "./usr/local/etc/agentcast/agentcast.conf " ] || fail "make uninstall left: $left"
ok "make uninstall removed everything but $PREFIX/etc/agentcast/agentcast.conf"
