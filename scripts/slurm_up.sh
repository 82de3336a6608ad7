#!/usr/bin/env bash
# A real single-node SLURM for local and CI tests (Debian 12 slurm-wlm 22.05 + munge, and slurmdbd +
# MariaDB for accounting, which submitit needs to see jobs that died without a result). Run as root.
#
# Idempotent: installs the packages when missing (apt-get update once, first), writes the configs,
# starts only the daemons that are not running yet (restarting slurmctld/slurmd when slurm.conf
# changed: `scontrol reconfigure` does not apply cred_expire), and waits until the node is idle.
# Every daemon it starts leaves its PID in $SLURM_TEST_DIR/run/NAME.pid; scripts/slurm_down.sh stops
# exactly those.
#
#   SLURM_TEST_DIR   state, spool, logs and PID files (default /tmp/slurm)
#   WITH_DBD         1 (default): accounting through slurmdbd + MariaDB; 0: no accounting
#
# Gotchas this script follows (numbered as in the comments below), found on Debian 12's SLURM 22.05:
#   1. Slurm may send --signal up to 30 s (PERIODIC_TIMEOUT) before it is due: a job whose time limit
#      is not above signal delay + 30 s gets USR2 before Python installs its handler, and dies.
#   2. A requeued job waits `cred_expire` seconds (default 120) before it may start again, and only
#      a restart of slurmctld applies a new value (`scontrol reconfigure` does not).
#   3. submitit needs `sacct` (accounting) to see jobs that died without writing a result; without
#      it, waiting on such a job never ends.
#   4. A new state dir restarts job ids at 1; an old accounting DB then answers for the new ids.
#   5. slurmdbd must listen before slurmctld starts with an empty state dir, or slurmctld aborts.
#   6. MariaDB's CREATE USER IF NOT EXISTS keeps an old password.
#   7. `scontrol ping` fails at once when the controller is down (`sinfo` takes seconds): tests use it.
#   8. With `srun` installed, submitit's AutoExecutor picks SLURM unless `cluster=` is explicit.
#   9. Requeue and resume are tested on this real SLURM, not with submitit's local executor.
#  10. The node name must be the short hostname.
set -euo pipefail
WITH_DBD=${WITH_DBD:-1}
S=${SLURM_TEST_DIR:-/tmp/slurm}
NODE=$(hostname -s)  # gotcha 10: the node name must be the short hostname
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 8 / 10 ))  # 80% of RAM, MiB
export DEBIAN_FRONTEND=noninteractive

say() { echo "slurm_up: $*" >&2; }
die() { say "$*"; for f in "$S"/log/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }; done; exit 1; }
wait_for() {  # wait_for SECONDS COMMAND...
  local n=$(( $1 * 4 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  return 1
}
alive() {  # alive NAME: a daemon this script started (PID file in $S/run) is running
  local f=$S/run/$1.pid p
  [ -s "$f" ] || return 1
  p=$(cat "$f"); kill -0 "$p" 2>/dev/null && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$1" ]
}
stop() {  # stop NAME: TERM a daemon started here, wait until it is gone
  alive "$1" || return 0
  local p; p=$(cat "$S/run/$1.pid"); kill "$p" 2>/dev/null || true
  wait_for 20 bash -c "! kill -0 $p" || say "$1 (pid $p) still running after 20 s"
  rm -f "$S/run/$1.pid"
}
port_open() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1"; }

# ---- packages ------------------------------------------------------------------------------------
pkgs="slurmctld slurmd slurm-client munge"
[ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
# shellcheck disable=SC2086
if ! dpkg -s $pkgs >/dev/null 2>&1; then
  say "installing $pkgs"
  [ "$(id -u)" = 0 ] || die "installing packages needs root"
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi
[ "$(id -u)" = 0 ] || die "starting the daemons needs root"
mkdir -p "$S"/{state,spool,log,run}

# gotcha 4: a new state dir restarts job ids at 1, so the old accounting DB must go with it
FRESH=0
if ! alive slurmctld && [ ! -e "$S/state/node_state" ]; then FRESH=1; fi

# ---- slurm.conf ----------------------------------------------------------------------------------
ACCT="AccountingStorageType=accounting_storage/none"
if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819"
fi
mkdir -p /etc/slurm
cat > "$S/slurm.conf.new" <<CONF
# written by scripts/slurm_up.sh: single-node test cluster
ClusterName=localtest
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
${ACCT}
# A requeued job becomes eligible cred_expire s later, but time passing is no event: only the
# periodic main scheduler (default every 60 s) starts it. 2 s cuts the requeue test from 30-60 s.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
KillWait=5
MinJobAge=300
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$S/slurm.conf.new" /etc/slurm/slurm.conf; then
  mv "$S/slurm.conf.new" /etc/slurm/slurm.conf
  if alive slurmctld || alive slurmd; then say "slurm.conf changed: restarting slurmctld and slurmd"; fi
  stop slurmd; stop slurmctld
else
  rm -f "$S/slurm.conf.new"
fi

# ---- munge ---------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then  # the munge postinst normally creates it
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 test -s /run/munge/munged.pid || die "munged did not start"
  cp /run/munge/munged.pid "$S/run/munged.pid"
fi

# ---- accounting: MariaDB + slurmdbd --------------------------------------------------------------
if [ "$WITH_DBD" = 1 ]; then
  if ! alive mariadbd; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    install -d -o mysql -g mysql /run/mysqld
    nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 >"$S/log/mariadb.log" 2>&1 &
    echo $! > "$S/run/mariadbd.pid"
  fi
  wait_for 30 mariadb -e 'select 1' || die "MariaDB did not come up"
  if [ "$FRESH" = 1 ]; then
    stop slurmdbd
    mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db"
  fi
  # gotcha 6: CREATE USER IF NOT EXISTS keeps an old password, so ALTER it too
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmtest';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY 'slurmtest';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$S/log/slurmdbd.log
PidFile=$S/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmtest
StorageLoc=slurm_acct_db
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  alive slurmdbd || slurmdbd
  # gotcha 5: slurmdbd must listen before slurmctld starts with an empty state dir
  wait_for 30 port_open 6819 || die "slurmdbd is not listening on 127.0.0.1:6819"
fi

# ---- controller and node -------------------------------------------------------------------------
alive slurmctld || slurmctld
wait_for 30 scontrol ping || die "slurmctld does not answer scontrol ping"
alive slurmd || slurmd
idle() { sinfo -h -n "$NODE" -o %T | grep -Eqx 'idle|mixed|allocated'; }
wait_for 60 idle || die "node $NODE did not become idle: $(sinfo -h -o '%N %T' 2>&1)"
sinfo
