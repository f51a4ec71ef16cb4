# Sourced by the set-up scripts: ensure_packages WHO HINT PACKAGE... installs (Debian, as root) the
# packages that are not installed yet; apt-get update runs only when something is missing. Without
# root it says what is missing and HINT (who will report it), and returns 0, so that a set-up step
# that cannot install leaves the tests that need it to say why.
ensure_packages() {
    local who=$1 hint=$2 pkg
    shift 2
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if ((EUID != 0)); then
        echo "$who: need root to install ${missing[*]}; skipping ($hint)" >&2
        return 0
    fi
    echo "$who: installing ${missing[*]}"
    # Another set-up (a second checkout, unattended-upgrades) may hold dpkg's lock: wait for it.
    local wait=(-o DPkg::Lock::Timeout=600)
    apt-get "${wait[@]}" update -q
    DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -q --no-install-recommends "${missing[@]}"
}
