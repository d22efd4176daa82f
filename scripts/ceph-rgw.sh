#!/usr/bin/env bash
# Single-node Ceph 16.2.x (Debian packages) + radosgw (beast) on 127.0.0.1, no systemd.
# cephx enabled with one key per daemon (like vstart.sh), memstore OSD, no mgr by default.
#
# Used by .ci/run to give test/store/s3.test.ts a real S3 endpoint. The facts
# in it (timeouts, config knobs) were measured on the project's machines.
#
# Usage: ceph-rgw.sh start DIR     # wipes DIR, starts mon/osd/(mgr)/rgw, creates S3 user
#        ceph-rgw.sh stop DIR      # kills the daemons recorded in DIR/pids
#        ceph-rgw.sh status DIR    # PIDs + RSS
# Env:   RGW_PORT (7480)  WITH_MGR (0|1, default 0)  MEMSTORE_BYTES (2147483648)
#        FAST_STOP (0|1: SIGKILL instead of SIGTERM)  PAXOS_PROPOSE_INTERVAL (0.05)
#        S3_ACCESS_KEY (TESTKEY)  S3_SECRET_KEY (TESTSECRET)  READY_TIMEOUT (120 s)
#        NO_INSTALL (0|1: never apt-get install the Ceph packages)
# start installs radosgw, ceph-mon, ceph-osd and ceph-common with apt-get when
# they are missing and we are root (Debian packages; about a minute).
set -euo pipefail

cmd=${1:-}; D=${2:-}
if [ -z "$cmd" ] || [ -z "$D" ]; then echo "usage: $0 start|stop|status DIR" >&2; exit 2; fi
case "$D" in /|/tmp|/tmp/|/root|/home|/usr*|/etc*|/var|/var/) echo "refusing DIR=$D" >&2; exit 2;; esac
D=$(realpath -m "$D")
CONF=$D/ceph.conf
PORT=${RGW_PORT:-7480}
WITH_MGR=${WITH_MGR:-0}
AK=${S3_ACCESS_KEY:-TESTKEY}; SK=${S3_SECRET_KEY:-TESTSECRET}
C="ceph -c $CONF --connect-timeout 15"

ms() { echo $(( ($(date +%s%N) - T0) / 1000000 )); }
log() { echo "[$(ms) ms] $*"; }

# running and not a zombie (PID 1 here is not an init that reaps promptly)
alive_pid() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$st" ] && [ "${st:0:1}" != Z ]; }
# wait up to $1 seconds for the given PIDs to exit
wait_gone() {
  local n=$(( $1 * 10 )); shift
  for i in $(seq 1 $n); do
    local alive=0
    for p in "$@"; do alive_pid "$p" && alive=1; done
    [ $alive = 0 ] && return 0; sleep 0.1
  done
  return 1
}
stop_all() {
  [ -f "$D/pids" ] || return 0
  local sig=TERM; [ "${FAST_STOP:-0}" = 1 ] && sig=KILL   # memstore: nothing to lose
  local clients mon
  clients=$(awk '$1!="mon.a"{print $2}' "$D/pids"); mon=$(awk '$1=="mon.a"{print $2}' "$D/pids")
  # rgw/osd/mgr first (they talk to the mon while shutting down), then the mon
  for p in $clients; do kill -$sig "$p" 2>/dev/null || true; done
  wait_gone 3 $clients || echo "still running 3 s after SIG$sig: $clients" >&2
  for p in $mon; do kill -$sig "$p" 2>/dev/null || true; done
  wait_gone 3 $mon || true
  for p in $clients $mon; do alive_pid "$p" && { echo "SIGKILL $p ($(ps -o comm= -p "$p"))"; kill -9 "$p" 2>/dev/null || true; }; done
  rm -f "$D/pids"
}

status() {
  [ -f "$D/pids" ] || { echo "not running"; return 0; }
  while read -r name pid; do
    if alive_pid "$pid"; then
      printf '%-16s pid=%-7s rss=%s MiB\n' "$name" "$pid" "$(( $(ps -o rss= -p "$pid") / 1024 ))"
    else
      printf '%-16s pid=%-7s DEAD\n' "$name" "$pid"
    fi
  done < "$D/pids"
}

# start a daemon in the foreground (-f), in the background of this shell, record its PID
spawn() {
  local name=$1; shift
  setsid "$@" -f >"$D/log/$name.out" 2>&1 </dev/null &
  echo "$name $!" >> "$D/pids"
}

case "$cmd" in
stop) stop_all; echo "stopped"; exit 0 ;;
status) status; exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac

T0=$(date +%s%N)

# install the daemons when missing (root only; never with NO_INSTALL=1)
need_install() {
  local b
  for b in radosgw ceph-mon ceph-osd ceph ceph-authtool monmaptool radosgw-admin curl; do
    command -v "$b" >/dev/null 2>&1 || return 0
  done
  return 1
}
if need_install; then
  if [ "${NO_INSTALL:-0}" = 1 ]; then echo "Ceph binaries missing and NO_INSTALL=1" >&2; exit 3; fi
  if [ "$(id -u)" != 0 ]; then echo "Ceph binaries missing and not root: cannot apt-get install them" >&2; exit 3; fi
  if ! command -v apt-get >/dev/null 2>&1; then echo "Ceph binaries missing and no apt-get here" >&2; exit 3; fi
  log "installing radosgw ceph-mon ceph-osd ceph-common curl with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || { echo "apt-get update failed" >&2; exit 3; }
  apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd ceph-common curl >/dev/null \
    || { echo "apt-get install of the Ceph packages failed" >&2; exit 3; }
  log "installed"
fi

stop_all
# another cluster (or anything) on our ports would make a confusing failure later
for p in 3300 6789 "$PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p on 127.0.0.1 is already in use (another ceph-rgw.sh cluster?); stop it first" >&2; exit 4
  fi
done
# a failed start must not leave daemons behind (KEEP_ON_FAIL=1 to debug them)
trap 'rc=$?; if [ $rc -ne 0 ] && [ "${KEEP_ON_FAIL:-0}" != 1 ]; then echo "start failed (rc=$rc), stopping daemons; logs in $D/log" >&2; FAST_STOP=1 stop_all; fi' EXIT
rm -rf "$D"; mkdir -p "$D"/{run,log,mon/ceph-a,osd/ceph-0,mgr/ceph-x,rgw}
FSID=$(cat /proc/sys/kernel/random/uuid)

cat > "$CONF" <<CONF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
mon initial members = a
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/keyring
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
log to stderr = false
err to stderr = true
mon cluster log file = $D/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
mgr data = $D/mgr/\$cluster-\$id
[mon]
# default 1 s: every mon write (each pool create / application enable that rgw does
# on first start) then costs ~1 s. Fine to lower on a 1-mon throwaway cluster.
paxos propose interval = ${PAXOS_PROPOSE_INTERVAL:-0.05}
# CI disks are often >70% full: default warn at 30% free, refuse to run at 5% free
mon data avail warn = 1
mon data avail crit = 0
mon warn on insecure global id reclaim allowed = false
[osd]
osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES:-2147483648}
osd max object name len = 460
osd max object namespace len = 64
[client.rgw.gw]
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw data = $D/rgw
rgw thread pool size = 64
rgw dynamic resharding = false
CONF

# One keyring with every entity (as vstart.sh does). ceph-mon --mkfs imports all of
# them into the mon's auth database, so no 'ceph auth add' round trips are needed.
K=$D/keyring
ceph-authtool --create-keyring "$K" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$K" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$K" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
ceph-authtool "$K" --gen-key -n mgr.x --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$K" --gen-key -n client.rgw.gw --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
monmaptool --create --clobber --fsid "$FSID" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$D/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" --keyring "$K" >"$D/log/mon-mkfs.out" 2>&1
log "mon mkfs done"
spawn mon.a ceph-mon -c "$CONF" -i a
$C mon stat >/dev/null
log "mon answering"

if [ "$WITH_MGR" = 1 ]; then spawn mgr.x ceph-mgr -c "$CONF" -i x; log "mgr started"; fi

OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_ID=$($C osd new "$OSD_UUID")
[ "$OSD_ID" = 0 ] || { echo "unexpected osd id $OSD_ID" >&2; exit 1; }
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1
log "osd mkfs done"
spawn osd.0 ceph-osd -c "$CONF" -i 0
for i in $(seq 1 120); do
  $C osd stat 2>/dev/null | grep -q '1 up.*1 in' && break; sleep 0.5
done
log "osd: $($C osd stat)"

spawn client.rgw.gw radosgw -c "$CONF" -n client.rgw.gw
code=000
for i in $(seq 1 $(( ${READY_TIMEOUT:-120} * 4 ))); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/" || true)
  [ "$code" = 200 ] && break
  kill -0 "$(awk '$1=="client.rgw.gw"{print $2}' "$D/pids")" 2>/dev/null || { echo "radosgw died; see $D/log/client.rgw.gw.log" >&2; tail -20 "$D/log/client.rgw.gw.out" >&2; exit 1; }
  sleep 0.25
done
[ "$code" = 200 ] || { echo "radosgw not answering (last HTTP $code); see $D/log/client.rgw.gw.log" >&2; exit 1; }
log "rgw answering HTTP 200 on 127.0.0.1:$PORT"
radosgw-admin -c "$CONF" -n client.admin user create --uid=test --display-name=test \
  --access-key="$AK" --secret="$SK" >"$D/log/user-create.json"
log "READY"
echo "S3_ENDPOINT=http://127.0.0.1:$PORT"
echo "S3_ACCESS_KEY=$AK"
echo "S3_SECRET_KEY=$SK"
echo "S3_REGION=us-east-1   (path-style addressing)"
echo "READY_MS=$(ms)"
status
