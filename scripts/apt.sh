# Shared by the set-up scripts that install Debian packages: as root, without questions; otherwise
# one line naming what to install.
apt_install() {  # apt_install SCRIPT_NAME PACKAGE...
    local script="$1"
    shift
    if [ "$(id -u)" -ne 0 ]; then
        echo "$script: $* not installed and we are not root; install the Debian package(s): $*" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "$@" </dev/null
}
