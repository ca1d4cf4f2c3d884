#!/usr/bin/env bash
# An sshd on 127.0.0.1:22 for `ray up configs/cluster-local.yaml` (Ray's local provider
# reaches even a one-machine cluster over SSH).
#
#   scripts/local_sshd.sh start   # install openssh-server + rsync if missing (apt-get, as
#                                 # root), make ~/.ssh/arc_local_cluster and authorize it
#                                 # for 127.0.0.1 only, link ~/arc-ray to this checkout,
#                                 # start sshd
#   scripts/local_sshd.sh stop    # stop that sshd and every process started through it
#   scripts/local_sshd.sh status
#
# sshd runs in its own PID namespace when `unshare` allows it: `ray up` runs `ray stop`,
# and `ray stop` ends every Ray process of the user on the machine; in the namespace it
# sees only the cluster's own. Stopping sshd (namespace PID 1) ends them all with it.
# Needs root (port 22, the privilege-separation directory); state lives in $ARC_SSHD_DIR.
# ARC_SSHD_PORT picks another port when 22 is taken (Ray's SSH has no port option: reach
# it with `auth: ssh_proxy_command` in the cluster file, see tests/test_cluster.py).
set -euo pipefail

STATE="${ARC_SSHD_DIR:-/tmp/arc-local-sshd}"
KEY="${ARC_SSH_KEY:-$HOME/.ssh/arc_local_cluster}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
USER_NAME="$(id -un)"
PORT="${ARC_SSHD_PORT:-22}"

log() { echo "local_sshd: $*" >&2; }
die() { log "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

running_pid() {
  [ -f "$STATE/launcher.pid" ] || return 1
  local pid; pid="$(cat "$STATE/launcher.pid")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

install_packages() {
  if [ -x /usr/sbin/sshd ] && command -v rsync >/dev/null && command -v ssh-keygen >/dev/null; then
    return
  fi
  [ "$(id -u)" -eq 0 ] || die "openssh-server and rsync are missing; install them (needs root)"
  command -v apt-get >/dev/null || die "openssh-server and rsync are missing and apt-get is not available"
  log "installing openssh-server and rsync"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq openssh-server rsync >/dev/null
}

make_key() {
  mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "arc-local-cluster" -f "$KEY"
  local auth="$HOME/.ssh/authorized_keys" pub
  pub="$(cut -d' ' -f1,2 "$KEY.pub")"
  touch "$auth" && chmod 600 "$auth"
  # from="127.0.0.1": the key opens this account only to connections from this machine.
  grep -qF "$pub" "$auth" || echo "from=\"127.0.0.1\" $pub arc-local-cluster" >> "$auth"
}

BASHRC_BEGIN="# >>> arc-local-cluster >>>"
BASHRC_END="# <<< arc-local-cluster <<<"

add_path_hook() {
  # Ray runs every remote command as `bash --login -i -c 'source ~/.bashrc; ...'`, and a
  # login shell resets PATH; this puts the project's environment first again, only in
  # sessions of this sshd (it sets ARC_LOCAL_CLUSTER), so `ray stop` (ray up, ray down)
  # finds Ray. `stop` removes it.
  touch "$HOME/.bashrc"
  grep -qF "$BASHRC_BEGIN" "$HOME/.bashrc" && return
  cat >> "$HOME/.bashrc" <<'EOF'
# >>> arc-local-cluster >>>
if [ -n "${ARC_LOCAL_CLUSTER:-}" ] && [ -d "$HOME/arc-ray/.venv/bin" ]; then export PATH="$HOME/arc-ray/.venv/bin:$PATH"; fi
# <<< arc-local-cluster <<<
EOF
}

remove_path_hook() {
  [ -f "$HOME/.bashrc" ] && sed -i "/^$BASHRC_BEGIN\$/,/^$BASHRC_END\$/d" "$HOME/.bashrc" || true
}

link_project() {
  local link="$HOME/arc-ray"
  if [ -L "$link" ] || [ -e "$link" ]; then
    [ "$(readlink -f "$link")" = "$REPO" ] || log "warning: $link exists and is not this checkout ($REPO); the cluster will use $link"
  else
    ln -s "$REPO" "$link"
    echo "$link" > "$STATE/created_link"
  fi
}

start() {
  if pid="$(running_pid)"; then log "already running (pid $pid)"; return; fi
  install_packages
  port_open && die "127.0.0.1:$PORT is already taken by an sshd this script did not start; authorize $KEY.pub there, or stop it"
  mkdir -p "$STATE" /run/sshd
  chmod 700 "$STATE"
  make_key
  link_project
  add_path_hook
  [ -f "$STATE/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/host_key"
  cat > "$STATE/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $STATE/host_key
PidFile $STATE/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers $USER_NAME
UsePAM no
X11Forwarding no
AllowTcpForwarding local
Subsystem sftp internal-sftp
SetEnv ARC_LOCAL_CLUSTER=1
EOF
  /usr/sbin/sshd -t -f "$STATE/sshd_config" || die "sshd rejects $STATE/sshd_config"
  if unshare --pid --fork --mount-proc true 2>/dev/null; then
    echo yes > "$STATE/pid_namespace"
    setsid unshare --pid --fork --mount-proc --kill-child \
      /usr/sbin/sshd -D -e -f "$STATE/sshd_config" >"$STATE/sshd.log" 2>&1 < /dev/null &
  else
    log "warning: no PID namespace here; \`ray stop\` through this sshd reaches every Ray process of $USER_NAME"
    echo no > "$STATE/pid_namespace"
    setsid /usr/sbin/sshd -D -e -f "$STATE/sshd_config" >"$STATE/sshd.log" 2>&1 < /dev/null &
  fi
  echo $! > "$STATE/launcher.pid"
  for _ in $(seq 50); do
    if ssh -q -p "$PORT" -i "$KEY" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=2 "$USER_NAME@127.0.0.1" true 2>/dev/null; then
      log "sshd on 127.0.0.1:$PORT (pid $(cat "$STATE/launcher.pid")), key $KEY"
      return
    fi
    sleep 0.2
  done
  cat "$STATE/sshd.log" >&2 || true
  stop
  die "sshd did not accept $KEY within 10 s"
}

stop() {
  if pid="$(running_pid)"; then
    kill "$pid" 2>/dev/null || true   # --kill-child: sshd, PID 1 of the namespace, goes too
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped (pid $pid)"
  fi
  remove_path_hook
  if [ -f "$STATE/created_link" ]; then rm -f "$(cat "$STATE/created_link")"; fi
  rm -rf "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid="$(running_pid)"; then echo "running (pid $pid, PID namespace: $(cat "$STATE/pid_namespace"))"
    else echo "stopped"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
