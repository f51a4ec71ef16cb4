#!/usr/bin/env bash
# `bash scripts/demo.sh --kvm`: a real seeded guest joins and answers (as root, on Debian).
#
# 1. The image: `saltmarsh image build debian-12` into /var/cache/saltmarsh-images/demo, unless the
#    image there was built from this very tree (its recipe's hash says so); the Debian base of a build
#    is cached for a week in /var/cache/saltmarsh-images/cache, so a build costs about a minute.
# 2. A real libvirtd + QEMU (scripts/install-libvirtd.sh installs them; started here as tests/realvirt.py
#    does, without systemd, unless a libvirtd already runs), a master on 127.0.0.1 and one hypervisor
#    agent on qemu:///system.
# 3. `virt init demo-g1 2 768 master://debian-12.qcow2 --enable-qcow --seed` with a `user` NIC (QEMU's
#    own networking: the guest reaches the master on the host's loopback at 10.0.2.2, and nothing
#    outside this machine), then the guest's own agent answers test.ping and host.info.
# Everything started here is stopped at the end, the VM purged; logs stay in ./demo-run.
#
# DEMO_DOMAIN_TYPE (default qemu: TCG, software emulation) is virt.domain_type; `auto` uses KVM where
# it can run a guest kernel (this project's CI machines' paravirtual KVM cannot, hence the default).
set -euo pipefail
cd "$(dirname "$0")/.."
if ((EUID != 0)); then
    echo "demo --kvm: run it as root (image build and the system libvirtd need it)" >&2
    exit 1
fi
bash scripts/setup.sh
bash scripts/install-libvirtd.sh

BIN=$PWD/.venv/bin
RUN=$PWD/demo-run
IMAGES=/var/cache/saltmarsh-images/demo
CACHE=/var/cache/saltmarsh-images/cache
VMS=/var/lib/libvirt/images/saltmarsh-demo  # QEMU (libvirt-qemu) must reach the disks: not under ./
PUB=${DEMO_PUBLISH_PORT:-14605}
REQ=${DEMO_REQUEST_PORT:-14606}
DOMAIN_TYPE=${DEMO_DOMAIN_TYPE:-qemu}
VM=demo-g1
rm -rf "$RUN" "$VMS" && mkdir -p "$RUN/master" "$RUN/kvm1" "$IMAGES" && mkdir -m 0755 "$VMS"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; }
sm() { say "$BIN/saltmarsh" -c "$RUN/master" "$@"; }
quiet() { "$BIN/saltmarsh" -c "$RUN/master" "$@" >/dev/null 2>&1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

pids=()
started_daemons=()  # libvirtd and virtlogd, if this script started them
cleanup() {
    set +e
    if ((${#pids[@]})); then
        quiet virt purge "$VM" --timeout 120
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
        wait "${pids[@]}" 2>/dev/null
    fi
    # A guest left by a failed run (its QEMU outlives the agent): only this demo's VM, by name.
    virsh -c qemu:///system destroy "$VM" >/dev/null 2>&1
    virsh -c qemu:///system undefine "$VM" >/dev/null 2>&1
    for pid in "${started_daemons[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -rf "$VMS"
}
trap cleanup EXIT

# The image in $IMAGES is current if its recipe is the one `image build` would make from this tree now.
image_is_current() {
    "$BIN/python" - "$IMAGES/debian-12.recipe.json" <<'PY'
import json
import sys

from saltmarsh.master.images import source
from saltmarsh.master.images.recipe import Recipe

try:
    built = json.load(open(sys.argv[1]))["recipe_sha256"]
except (OSError, ValueError, KeyError):
    sys.exit(1)
sys.exit(0 if built == Recipe.make(source_sha256=source.tree_sha256(source.installed_tree())).sha256 else 1)
PY
}

daemon_runs() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
start_daemon() {  # $1 binary, $2 pid file: daemonised, then waited for until its pid file names it
    "$1" -d
    for _ in $(seq 300); do daemon_runs "$2" && break; sleep 0.1; done
    daemon_runs "$2" || { echo "demo --kvm: $1 did not start (see /var/log/libvirt)" >&2; exit 1; }
    started_daemons=("$(cat "$2")" "${started_daemons[@]}")  # stopped in reverse order
}
start_libvirtd() {
    if virsh -c qemu:///system version >/dev/null 2>&1; then
        echo "    a libvirtd already answers on qemu:///system: using it (and leaving it running)"
        return
    fi
    daemon_runs /run/virtlogd.pid || start_daemon /usr/sbin/virtlogd /run/virtlogd.pid
    start_daemon /usr/sbin/libvirtd /run/libvirtd.pid
    for _ in $(seq 300); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done
    echo "    started virtlogd and libvirtd (pids ${started_daemons[*]}); they stop at the end"
}

cat > "$RUN/master/master.yaml" <<YAML
interface: 127.0.0.1
publish_port: $PUB
request_port: $REQ
root_dir: state
file_roots: [$IMAGES]
YAML
cat > "$RUN/kvm1/agent.yaml" <<YAML
id: kvm1
master: 127.0.0.1
publish_port: $PUB
request_port: $REQ
root_dir: state
libvirt_uri: "qemu:///system"
auth_retry_seconds: 0.5
virt:
  vm_dir: $VMS/vms
  images_dir: $VMS/cache
  domain_type: $DOMAIN_TYPE
  nic_profiles: {lab: [{type: user}]}
YAML

demo_started=$(now)
step "The guest image: Debian 12 with cloud-init and the agent, from this tree"
if image_is_current; then
    echo "    $IMAGES/debian-12.qcow2 was built from this tree: reusing it"
else
    sm image build debian-12 --force --cache-dir "$CACHE"
fi
sm image list

step "A real libvirtd + QEMU, a master, and a hypervisor agent on qemu:///system"
start_libvirtd
"$BIN/saltmarsh-master" -c "$RUN/master" 2> "$RUN/master.log" & pids+=($!)
"$BIN/saltmarsh-agent" -c "$RUN/kvm1" 2> "$RUN/kvm1.log" & pids+=($!)
for _ in $(seq 150); do quiet key accept kvm1 && break; sleep 0.2; done
for _ in $(seq 150); do
    "$BIN/saltmarsh" -c "$RUN/master" virt host-info --json 2>/dev/null | grep -q '"libvirt"' && break
    sleep 0.2
done
sm virt host-info

step "A seeded guest (domain type $DOMAIN_TYPE$([[ $DOMAIN_TYPE == qemu ]] && echo ': TCG')): its own agent joins with a one-time token"
vm_started=$(now)
sm virt init "$VM" 2 768 master://debian-12.qcow2 --enable-qcow --seed --master-address 10.0.2.2 \
    --nic-profile lab --join-timeout 300
sm run "$VM" test.ping
answered=$(since "$vm_started")
sm run "$VM" host.info
sm virt console-log "$VM" --lines 6

step "Done"
echo "    $VM answered test.ping ${answered} s after virt init started (domain type $DOMAIN_TYPE$([[ $DOMAIN_TYPE == qemu ]] && echo ', TCG')); the demo took $(since "$demo_started") s"
echo "    purging $VM and stopping what this demo started; logs are in $RUN/*.log"
