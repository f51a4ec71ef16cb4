#!/usr/bin/env bash
# The demo: set up (idempotent), then a master and three agents on loopback, each agent on
# libvirt's built-in test:///default driver. Keys are accepted, jobs run, and the events they
# raise stream beside them. Everything lives in ./demo-run and stops at the end.
#
# --kvm (as root): a real guest instead. The Debian image is built from this tree (or reused, if the
# one in /var/cache/saltmarsh-images/demo was built from it), a real libvirtd is started unless one
# runs, then a master, a hypervisor agent on qemu:///system, and a seeded guest whose own agent joins
# and answers test.ping; the time it took is printed. Everything started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --kvm ]]; then
    exec bash scripts/demo-kvm.sh
elif (($#)); then
    echo "usage: bash scripts/demo.sh [--kvm]" >&2
    exit 2
fi
bash scripts/setup.sh

BIN=$PWD/.venv/bin
RUN=$PWD/demo-run
PUB=${DEMO_PUBLISH_PORT:-14605}
REQ=${DEMO_REQUEST_PORT:-14606}
rm -rf "$RUN" && mkdir -p "$RUN/master"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

shown=0
events() {  # print the events raised since the last call (heartbeats left out: one a second per agent)
    sleep 0.3
    local total; total=$(wc -l < "$RUN/events.log")
    tail -n +"$((shown + 1))" "$RUN/events.log" | head -n "$((total - shown))" | grep -v /heartbeat | sed 's/^/    event  /' || true
    shown=$total
}
step() { [[ -e $RUN/events.log ]] && events; printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; }
sm() { say "$BIN/saltmarsh" -c "$RUN/master" "$@"; }

cat > "$RUN/master/master.yaml" <<YAML
interface: 127.0.0.1
publish_port: $PUB
request_port: $REQ
root_dir: state
heartbeat_seconds: 1
YAML
"$BIN/saltmarsh-master" -c "$RUN/master" 2> "$RUN/master.log" & pids+=($!)

zones=(a a b)
for i in 1 2 3; do
    mkdir -p "$RUN/hv$i"
    cat > "$RUN/hv$i/agent.yaml" <<YAML
id: hv$i
master: 127.0.0.1
publish_port: $PUB
request_port: $REQ
root_dir: state
libvirt_uri: "test:///default"
auth_retry_seconds: 0.5
labels: {role: hv, zone: ${zones[$((i-1))]}}
virt: {vm_dir: vms}
YAML
    "$BIN/saltmarsh-agent" -c "$RUN/hv$i" 2> "$RUN/hv$i.log" & pids+=($!)
done

for _ in $(seq 100); do
    [[ $("$BIN/saltmarsh" -c "$RUN/master" key list --json 2>/dev/null | grep -c '"hv') == 3 ]] && break
    sleep 0.1
done

# The event bus, streamed by `saltmarsh events` into a file; each step shows what it raised.
"$BIN/saltmarsh" -c "$RUN/master" events > "$RUN/events.log" & pids+=($!)
sleep 0.3

step "Three agents submitted their keys; the operator checks fingerprints and accepts them"
sm key list
sm key finger
sm key accept --all
sleep 1

step "Jobs: ping everyone, then the hypervisors' host.info (libvirt's test driver answers)"
sm run '*' test.ping
sm run hv1 host.info
step "Targets: a list, labels, and kwargs"
sm run -L hv1,hv3 test.echo 'hello from the master'
sm run -l zone=a test.echo text='zone a only'
step "Agents fire their own events"
sm run '*' event.send demo/deployed '{"version": 2}'
step "A failing function returns a structured error (and a non-zero exit)"
sm run hv2 test.raise_error message='disk full' || true
step "The cloud controller: every hypervisor from the inventory (agents pushed it; nothing is polled)"
sm virt host-info
step "virt init places a VM by itself: filters, then most free memory, then fewest VMs"
sm virt init web1 1 256 --enable-vnc
sm virt init web2 2 512 --label zone=b --dry-run
sm virt init web2 2 512 --label zone=b
step "virt query, in the layout of Salt Virt's (one VM shown; plain 'virt query' shows all)"
sm virt query web1
step "Operations by VM name go to whichever hypervisor holds it; libvirt's own events follow"
sm virt pause web1
sm virt resume web1
sm virt list
step "The job cache"
sm job list
sm job show "$("$BIN/saltmarsh" -c "$RUN/master" job list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["jid"])')"

step "hv3 goes away: after three missed heartbeats the master says so, and the CLI names it"
kill -TERM "${pids[3]}"
sleep 4
sm run '*' test.ping --timeout 2 || true
step "Deleting hv3's key rotates the session key; hv3 would get no further job"
sm key delete hv3
sm key list

step "Stopping (SIGTERM); each daemon exits 0"
kill -TERM "${pids[-1]}" 2>/dev/null || true
for i in 0 1 2; do kill -TERM "${pids[$i]}"; wait "${pids[$i]}" && echo "    pid ${pids[$i]} exited 0"; done
pids=()
echo "logs are in $RUN/*.log"
