#!/usr/bin/env bash
# ckptd set-up for a fresh Debian 12 machine, run as root. Idempotent: a second run that finds
# everything in place takes a few seconds.
#
# Installs: runc, iptables (CRIU's network lock), busybox-static (test rootfs), Prometheus
# (promtool, and a server for the dashboards' tests), Podman (with runc as its runtime, see
# below), the distribution registry with htpasswd and skopeo (the registry tests), CRIU's build dependencies, and CRIU >= 4.2. Debian 12's CRIU 3.17 fails on kernels
# >= 6.x ("vdso: Unexpected rt vDSO area bounds") and 4.1.x cannot dump TCP sockets on kernels
# >= 6.16, so when the
# installed criu is missing, older than 4.2, or fails `criu check`, CRIU is built from the newest
# Debian (sid) source package >= 4.2. apt verifies the tarball checksums against the signed
# Sources index. The build is cached under $CKPTD_SETUP_CACHE and installed to /usr/local/sbin.
set -euo pipefail

CACHE=${CKPTD_SETUP_CACHE:-/var/cache/ckptd-setup}
CRIU_MIN=4.2
step() { printf '\n==> setup: %s\n' "$*"; }
die() { printf '\nsetup FAILED at step "%s": %s\n' "$CURRENT_STEP" "$*" >&2; exit 1; }
CURRENT_STEP=start
trap 'rc=$?; [ $rc -ne 0 ] && printf "\nsetup FAILED at step \"%s\" (exit %s); see the output above\n" "$CURRENT_STEP" "$rc" >&2' EXIT

[ "$(id -u)" -eq 0 ] || { echo "setup must run as root: run it as root, or with sudo (sudo make setup)" >&2; exit 1; }

APT_PKGS=(runc iptables busybox-static pkg-config
  libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler libnl-3-dev libnet1-dev
  libcap-dev libbsd-dev libnftables-dev libgnutls28-dev uuid-dev
  python3 python3-venv curl procps util-linux gcc libc6-dev make docker.io jq zstd tmux age
  podman prometheus docker-registry skopeo apache2-utils)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  CURRENT_STEP="apt-get install ${missing[*]}"
  step "$CURRENT_STEP"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || die "apt-get update failed: check the machine's apt sources and network"
  apt-get install -y -q --no-install-recommends "${missing[@]}" || die "could not install ${missing[*]}"
fi

# --- CRIU ---------------------------------------------------------------------------------
criu_ok() {
  local bin v
  bin=$(command -v criu 2>/dev/null) || return 1
  v=$("$bin" --version 2>/dev/null | sed -n 's/^Version: *//p')
  [ -n "$v" ] || return 1
  dpkg --compare-versions "$v" ge "$CRIU_MIN" || { echo "setup: $bin is CRIU $v (< $CRIU_MIN)"; return 1; }
  "$bin" check >/dev/null 2>&1 || { echo "setup: '$bin check' fails"; return 1; }
  echo "setup: CRIU $v at $bin passes criu check"
}

if ! criu_ok; then
  CURRENT_STEP="fetch CRIU source"
  step "$CURRENT_STEP (Debian sid source package, newest >= $CRIU_MIN)"
  mkdir -p "$CACHE/apt/lists/partial" "$CACHE/src"
  # deb-src for sid, on the mirror this machine's own apt configuration uses.
  mirror=$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null | grep -v -- '-security' | grep -m1 '/debian/\?$' || true)
  if [ -z "$mirror" ]; then
    mirror=$(grep -rhoE '(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
      | grep -v security | head -1 | awk '{print $2}')
  fi
  [ -n "$mirror" ] || die "no Debian mirror found in the apt configuration"
  mirror=${mirror%/}
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  printf 'deb-src [signed-by=%s] %s sid main\n' "$keyring" "$mirror" > "$CACHE/apt/sources.list"
  APTOPT=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
          -o "Dir::State::Lists=$CACHE/apt/lists" -o "APT::Sandbox::User=root")
  apt-get "${APTOPT[@]}" update -q || die "apt-get update of sid deb-src failed (mirror $mirror)"
  ver=$(apt-cache "${APTOPT[@]}" showsrc criu 2>/dev/null | sed -n 's/^Version: *//p' | sort -V | tail -1)
  [ -n "$ver" ] || die "the archive serves no criu source package"
  dpkg --compare-versions "$ver" ge "$CRIU_MIN" || die "newest criu source is $ver, need >= $CRIU_MIN"
  upstream=${ver%-*}
  builddir="$CACHE/src/criu-$upstream"
  if [ ! -x "$builddir/criu/criu" ]; then
    (cd "$CACHE/src" && apt-get "${APTOPT[@]}" source --download-only --tar-only "criu=$ver") \
      || die "apt-get source criu=$ver failed"
    orig=$(ls "$CACHE/src"/criu_"$upstream".orig.tar.* | head -1)
    [ -f "$orig" ] || die "criu_$upstream.orig tarball not found after download"
    rm -rf "$builddir" && mkdir -p "$builddir"
    tar -xf "$orig" -C "$builddir" --strip-components=1
    CURRENT_STEP="build CRIU $upstream"
    step "$CURRENT_STEP"
    make -C "$builddir" -j"$(nproc)" criu >"$CACHE/criu-build.log" 2>&1 \
      || { tail -30 "$CACHE/criu-build.log"; die "make criu failed; full log in $CACHE/criu-build.log"; }
  fi
  CURRENT_STEP="install CRIU $upstream"
  step "$CURRENT_STEP to /usr/local/sbin/criu"
  install -m 0755 "$builddir/criu/criu" /usr/local/sbin/criu
  hash -r
  criu_ok || { /usr/local/sbin/criu check || true; die "CRIU $upstream was built but 'criu check' fails"; }
fi

# --- Podman ---------------------------------------------------------------------------------
# Debian 12's Podman 4.3.1 defaults to crun, which refuses this kind of machine's hybrid cgroup
# layout and has no CRIU support in Debian, and asks for rlimits that need CAP_SYS_RESOURCE. With
# runc and explicit limits it runs and checkpoints containers. Written only where the machine has
# no containers.conf of its own: an operator's configuration is theirs.
CURRENT_STEP="podman configuration"
if [ ! -e /etc/containers/containers.conf ]; then
  step "$CURRENT_STEP: /etc/containers/containers.conf (runtime runc, nofile/nproc limits)"
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'CONF'
# Written by ckptd's make setup (scripts/setup.sh): Podman with runc, which checkpoints through
# CRIU, and explicit limits (the default ones need CAP_SYS_RESOURCE).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF
fi

# --- Live migration's pipe limits -----------------------------------------------------------
# A lazy dump holds the whole memory in pipes and reads it through a 3.2 MiB pipe; without
# CAP_SYS_RESOURCE (this machine's root has none, a member's CRIU never does) the kernel's
# defaults (fs.pipe-max-size 1 MiB, fs.pipe-user-pages-soft 16384 pages) refuse both. Measured:
# the page server then fails at its first request ("tee: Operation not permitted").
CURRENT_STEP="sysctl for live migration"
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt 4194304 ] || [ "$(cat /proc/sys/fs/pipe-user-pages-soft)" != 0 ]; then
  step "$CURRENT_STEP: fs.pipe-max-size=4194304 fs.pipe-user-pages-soft=0 (/etc/sysctl.d/60-ckptd.conf)"
  printf '# ckptd live migration (CRIU lazy pages): see README, Live migration\nfs.pipe-max-size = 4194304\nfs.pipe-user-pages-soft = 0\n' \
    > /etc/sysctl.d/60-ckptd.conf
  echo 4194304 > /proc/sys/fs/pipe-max-size || die "cannot set fs.pipe-max-size"
  echo 0 > /proc/sys/fs/pipe-user-pages-soft || die "cannot set fs.pipe-user-pages-soft"
fi

# The OpenAPI validity check of the test suite runs in its own virtualenv (Debian's python3 is
# externally managed; no package of the validator exists in Debian 12).
CURRENT_STEP="python venv with openapi-spec-validator"
VENV="$CACHE/venv"
if ! "$VENV/bin/python" -c 'import openapi_spec_validator, yaml, schemathesis, prometheus_client, moto, boto3' 2>/dev/null \
    || [ ! -x "$VENV/bin/moto_server" ]; then
  step "$CURRENT_STEP, schemathesis, prometheus-client, moto's S3 server (the remotes' tests)"
  [ -x "$VENV/bin/pip" ] || /usr/bin/python3 -m venv "$VENV" || die "python3 -m venv failed (is python3-venv installed?)"
  "$VENV/bin/pip" install -q 'openapi-spec-validator>=0.7' pyyaml 'schemathesis>=4,<5' prometheus-client \
    'moto[server]>=5,<6' boto3 \
    || die "pip install openapi-spec-validator schemathesis moto failed"
fi

CURRENT_STEP="rust toolchain"
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup)"
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt || true

CURRENT_STEP=done
step "done: $(criu --version | head -1), $(runc --version | head -1)"
