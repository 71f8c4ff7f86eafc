#!/usr/bin/python3
"""Tests of the .deb and .rpm that packaging/build.sh makes (ctest: packaging.deb, packaging.rpm,
packaging.unit).

    SOCKHERD_PACKAGE_DIR=build-pkg SOCKHERD_VERSION=0.1.0 python3 tests/packaging/package_test.py deb|rpm|unit

deb   installs the .deb on this machine (root), checks the user, the conffile, check-config, the
      unit (systemd-analyze verify), runs the installed binary on the installed config moved to
      free loopback ports (workers as the sockherd user; HTTP, the demo page, a WebSocket echo,
      the control socket), then dpkg -r keeps the conffile and dpkg -P removes it. Lintian: no
      errors, and no warning outside ALLOWED_LINTIAN.
rpm   rpm -qpl / --scripts / -qpR / --configfiles: the files, the scriptlets, only dependencies
      RHEL 9 and Fedora have (RHEL9_LIBRARIES and the version ceilings below), the conffile.
unit  systemd-analyze verify on packaging/sockherd.service, pointed at the built binary.

Every wait has a deadline; traffic goes to 127.0.0.1 only.
"""

import base64
import glob
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_DIR = os.environ.get("SOCKHERD_PACKAGE_DIR", os.path.join(ROOT, "build-pkg"))
VERSION = os.environ.get("SOCKHERD_VERSION", "")

# What the packages hold (files and the package's own directories).
DEB_FILES = {
    "/etc/sockherd/sockherd.toml",
    "/lib/systemd/system/sockherd.service",
    "/usr/bin/sockherd",
    "/usr/share/doc/sockherd/README.md",
    "/usr/share/doc/sockherd/changelog.gz",
    "/usr/share/doc/sockherd/copyright",
    "/usr/share/man/man8/sockherd.8.gz",
    "/usr/share/sockherd/www/index.html",
}
RPM_FILES = (DEB_FILES - {"/lib/systemd/system/sockherd.service"}) | {
    "/usr/lib/systemd/system/sockherd.service",
    "/etc/sockherd",
    "/usr/share/doc/sockherd",
    "/usr/share/sockherd",
    "/usr/share/sockherd/www",
}

# Lintian warnings we keep, each with its reason. Info tags are printed, not failed:
#   binary-has-unneeded-section .comment: CPack's strip leaves the compiler's ident section.
#   package-contains-documentation-outside-usr-share-doc www/index.html: it is the demo page the
#     node serves, not documentation.
#   package-supports-alternative-init-but-no-init.d-script: sockherd is a Type=notify service and
#     ships no SysV script.
ALLOWED_LINTIAN = set()

# Shared libraries the binary may need: each exists on Debian 12, Ubuntu 22.04+, RHEL/Rocky 9 and
# Fedora. Version ceilings are RHEL 9's (glibc 2.34, GCC 11's libstdc++ and libgcc_s, systemd 252).
# OpenSSL (TLS listeners) is 3.0 on both Debian 12 and RHEL 9, so only its 3.0.0 symbols may be used.
RHEL9_LIBRARIES = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libsystemd.so.0",
                   "ld-linux-x86-64.so.2", "libssl.so.3", "libcrypto.so.3"}
VERSION_CEILINGS = {"GLIBC": (2, 34), "GLIBCXX": (3, 4, 29), "CXXABI": (1, 3, 13), "GCC": (11, 0),
                    "LIBSYSTEMD": (252,), "OPENSSL": (3, 0, 0)}
RPM_PLAIN_REQUIRES = {"/bin/sh", "shadow-utils", "systemd", "rtld(GNU_HASH)"}

failures = []


def log(msg):
    print(msg, flush=True)


def check(cond, msg):
    if cond:
        log("ok:   " + msg)
    else:
        log("FAIL: " + msg)
        failures.append(msg)
    return cond


def run(cmd, check_rc=True, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       stdin=subprocess.DEVNULL, timeout=kw.pop("timeout", 120), **kw)
    if check_rc and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def wait_until(what, pred, timeout=20.0, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def the_package(pattern):
    found = sorted(glob.glob(os.path.join(PACKAGE_DIR, pattern)))
    if len(found) != 1:
        raise AssertionError(f"expected one {pattern} in {PACKAGE_DIR}, found {found or 'none'}: "
                             "run `sh packaging/build.sh` first")
    return found[0]


def version_tuple(s):
    return tuple(int(x) for x in s.split("."))


def version_ok(tag):
    """'GLIBC_2.34' -> whether it is within the RHEL 9 ceiling (unknown families are not)."""
    m = re.fullmatch(r"([A-Z]+)_([0-9.]+)", tag)
    if not m or m.group(1) not in VERSION_CEILINGS:
        return False
    return version_tuple(m.group(2)) <= VERSION_CEILINGS[m.group(1)]


def check_binary(path):
    """The dynamic dependencies of the binary: libraries and symbol versions RHEL 9 has."""
    dyn = run(["readelf", "-dW", path]).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
    check(needed and needed <= RHEL9_LIBRARIES,
          f"{path} needs only libraries RHEL 9 and Debian 12 both have: {sorted(needed)}"
          + (f" (not allowed: {sorted(needed - RHEL9_LIBRARIES)})" if needed - RHEL9_LIBRARIES else ""))
    syms = run(["readelf", "-VW", path]).stdout
    tags = set(re.findall(r"Name: ([A-Z]+_[0-9.]+)", syms))
    bad = sorted(t for t in tags if not version_ok(t))
    check(tags and not bad, f"{path}: symbol versions within RHEL 9's ({len(tags)} checked)"
          + (f"; too new or unknown: {bad}" if bad else ""))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def websocket_echo(port, path, text):
    """One masked text frame out, one frame back, over a plain socket (RFC 6455)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        status_line = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status_line:
            return f"handshake answered {status_line!r}"
        rest = head.split(b"\r\n\r\n", 1)[1]
        payload = text.encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                  + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while len(rest) < 2 + len(payload):
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        if rest[0] != 0x81 or rest[1] != len(payload):
            return f"unexpected frame header {rest[:2]!r}"
        return rest[2:2 + len(payload)].decode()


def proc_uids(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    return []


def dpkg_state():
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "sockherd"], check_rc=False)
    return r.stdout.strip() if r.returncode == 0 else ""


def run_installed_node(uid_expected):
    """The installed binary on the installed config, moved to free loopback ports."""
    with open("/etc/sockherd/sockherd.toml") as f:
        text = f.read()
    tmp = tempfile.mkdtemp(prefix="sockherd-pkg-")
    os.chmod(tmp, 0o755)
    port, admin = free_port(), free_port()
    control = os.path.join(tmp, "control.sock")
    for old, new in [('address = "0.0.0.0:80"', f'address = "127.0.0.1:{port}"'),
                     ('address = "127.0.0.1:9090"', f'address = "127.0.0.1:{admin}"'),
                     ('control_socket = "/run/sockherd/control.sock"', f'control_socket = "{control}"'),
                     ('workers = "auto"', "workers = 2")]:
        if not check(text.count(old) == 1, f"the installed config has `{old}` once"):
            return
        text = text.replace(old, new)
    conf = os.path.join(tmp, "sockherd.toml")
    with open(conf, "w") as f:
        f.write(text)
    log_path = os.path.join(tmp, "node.log")
    with open(log_path, "w") as out:
        node = subprocess.Popen(["/usr/bin/sockherd", "run", "--config", conf], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    try:
        wait_until("/healthz 200", lambda: http_get(port, "/healthz")[0] == 200, timeout=30)
        status, body = http_get(port, "/")
        with open("/usr/share/sockherd/www/index.html", "rb") as f:
            page = f.read()
        check(status == 200 and body == page, "GET / serves /usr/share/sockherd/www/index.html")
        check(websocket_echo(port, "/echo", "hello from the package test") == "hello from the package test",
              "a WebSocket echo round trip through the installed node")

        def two_workers():
            code, raw = http_get(admin, "/status.json")
            if code != 200:
                return None
            pids = [w.get("pid") for w in json.loads(raw).get("workers", []) if w.get("state") == "up"]
            return pids if len(pids) == 2 and all(isinstance(p, int) and p > 0 for p in pids) else None
        pids = wait_until("two workers up in status.json", two_workers, timeout=30)
        for pid in pids:
            check(proc_uids(pid) == [uid_expected] * 4,
                  f"worker pid {pid} runs as sockherd (uid {uid_expected}): Uid line {proc_uids(pid)}")
            user = run(["ps", "-o", "user=", "-p", str(pid)]).stdout.strip()
            check(user == "sockherd", f"ps shows worker {pid} as user sockherd ({user!r})")
        check(proc_uids(node.pid)[1] == 0, "the supervisor (started as root) stays root")
        st = run(["/usr/bin/sockherd", "status", "--socket", control], check_rc=False)
        check(st.returncode == 0 and "up" in st.stdout, f"sockherd status over the control socket (rc {st.returncode})")
        node.send_signal(signal.SIGTERM)
        rc = node.wait(timeout=60)
        check(rc == 0, f"SIGTERM: the node drained and exited 0 (rc {rc})")
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(timeout=10)
        with open(log_path) as f:
            lines = f.read().splitlines()
        errors = [line for line in lines if "] error:" in line or "] critical:" in line]
        check(not errors, "the node logged no error" + ("".join("\n  " + e for e in errors)))
        shutil.rmtree(tmp, ignore_errors=True)


def test_deb():
    deb = the_package("sockherd_*.deb")
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    check(os.path.basename(deb) == f"sockherd_{VERSION}_{arch}.deb", f"file name {os.path.basename(deb)}")
    check(run(["dpkg-deb", "-f", deb, "Version"]).stdout.strip() == VERSION, f"Version: {VERSION}")
    listing = run(["dpkg-deb", "-c", deb]).stdout.splitlines()
    files = {line.split()[5][1:] for line in listing if not line.startswith("d")}
    check(files == DEB_FILES, "the .deb holds exactly the expected files"
          + (f"; extra {sorted(files - DEB_FILES)}, missing {sorted(DEB_FILES - files)}" if files != DEB_FILES else ""))
    depends = run(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip()
    check("adduser" in depends and "libc6" in depends and not re.search(r"spdlog|fmt|boost", depends),
          f"Depends: {depends}")

    lint = run(["lintian", "--tag-display-limit", "0", "-I", "-E", "--pedantic", deb], check_rc=False, timeout=600)
    tags = [line for line in lint.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    for t in tags:
        log("      lintian " + t)
    errors = [t for t in tags if t.startswith("E: ")]
    warnings = {t.split()[2] for t in tags if t.startswith("W: ")}
    check(not errors and lint.returncode == 0, f"lintian: no errors (rc {lint.returncode})")
    check(warnings <= ALLOWED_LINTIAN, f"lintian: no warnings beyond the documented ones {sorted(warnings - ALLOWED_LINTIAN)}")

    if dpkg_state():
        raise AssertionError("sockherd is already installed here; the test installs and purges it. "
                             "Remove it first: dpkg -P sockherd")
    # A sockherd system user left by an earlier install (removal keeps it, as Debian does) would
    # make "postinst created the user" prove nothing: it goes first.
    try:
        leftover = pwd.getpwnam("sockherd")
    except KeyError:
        leftover = None
    if leftover is not None:
        check(leftover.pw_uid < 1000 and leftover.pw_shell.endswith("nologin"),
              "the leftover sockherd user is a system user (the test may delete it)")
        run(["deluser", "--system", "--quiet", "sockherd"], check_rc=False)
        run(["delgroup", "--system", "--quiet", "sockherd"], check_rc=False)
        check(run(["getent", "passwd", "sockherd"], check_rc=False).returncode != 0,
              "the leftover sockherd user is gone before installing")
    installed = False
    try:
        r = run(["dpkg", "-i", deb], check_rc=False, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        installed = True
        check(r.returncode == 0, f"dpkg -i exits 0 ({r.returncode}){r.stderr}")
        check(dpkg_state() == "ii", "dpkg: installed")
        try:
            user = pwd.getpwnam("sockherd")
        except KeyError:
            user = None
        check(user is not None and user.pw_uid < 1000 and user.pw_shell.endswith("nologin"),
              "postinst created the sockherd system user")
        out = run(["/usr/bin/sockherd", "--version"]).stdout.strip()
        check(out == f"sockherd {VERSION}", f"/usr/bin/sockherd --version: {out}")
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "sockherd"]).stdout
        check("/etc/sockherd/sockherd.toml" in conffiles, "/etc/sockherd/sockherd.toml is a conffile")
        cc = run(["/usr/bin/sockherd", "check-config", "/etc/sockherd/sockherd.toml"], check_rc=False)
        check(cc.returncode == 0, f"check-config on the installed config: {cc.stdout.strip()}{cc.stderr.strip()}")
        with open("/etc/sockherd/sockherd.toml") as f:
            check(re.search(r'^address = "0\.0\.0\.0:80"$', f.read(), re.M) is not None,
                  "the installed config listens on port 80")
        v = run(["systemd-analyze", "verify", "/lib/systemd/system/sockherd.service"], check_rc=False)
        check(v.returncode == 0 and "sockherd" not in v.stdout + v.stderr,
              f"systemd-analyze verify on the installed unit (rc {v.returncode}){v.stdout}{v.stderr}")
        check(run(["man", "-w", "sockherd"], check_rc=False).stdout.strip() == "/usr/share/man/man8/sockherd.8.gz",
              "man -w sockherd finds sockherd(8)")
        check_binary("/usr/bin/sockherd")
        if user is not None:
            run_installed_node(user.pw_uid)

        # A local change survives reinstalling (dpkg keeps a changed conffile) and removal.
        with open("/etc/sockherd/sockherd.toml", "a") as f:
            f.write("# a local change\n")
        r = run(["dpkg", "-i", deb], check_rc=False, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        check(r.returncode == 0, f"reinstalling exits 0 ({r.returncode}){r.stderr}")
        with open("/etc/sockherd/sockherd.toml") as f:
            check(f.read().endswith("# a local change\n"), "reinstalling kept the changed conffile")
        r = run(["dpkg", "-r", "sockherd"], check_rc=False)
        check(r.returncode == 0 and not os.path.exists("/usr/bin/sockherd"), "dpkg -r removes the binary")
        check(dpkg_state() == "rc", f"dpkg: removed, config-files remain ({dpkg_state()!r})")
        check(os.path.isfile("/etc/sockherd/sockherd.toml"), "dpkg -r keeps /etc/sockherd/sockherd.toml")
        os.makedirs("/run/sockherd", exist_ok=True)
        open("/run/sockherd/control.sock.test", "w").close()
        r = run(["dpkg", "-P", "sockherd"], check_rc=False)
        installed = False
        check(r.returncode == 0 and dpkg_state() == "", "dpkg -P purges the package")
        check(not os.path.exists("/etc/sockherd"), "dpkg -P removes /etc/sockherd")
        check(not os.path.exists("/run/sockherd"), "dpkg -P removes the runtime directory /run/sockherd")
    finally:
        if installed or dpkg_state():
            run(["dpkg", "-P", "sockherd"], check_rc=False)


def test_rpm():
    rpm = the_package("sockherd-*.rpm")
    arch = platform.machine()
    check(os.path.basename(rpm) == f"sockherd-{VERSION}-1.{arch}.rpm", f"file name {os.path.basename(rpm)}")
    check(run(["rpm", "-qp", "--qf", "%{VERSION}", rpm]).stdout == VERSION, f"Version: {VERSION}")
    files = set(run(["rpm", "-qpl", rpm]).stdout.split())
    check(files == RPM_FILES, "rpm -qpl lists exactly the expected files"
          + (f"; extra {sorted(files - RPM_FILES)}, missing {sorted(RPM_FILES - files)}" if files != RPM_FILES else ""))
    scripts = run(["rpm", "-qp", "--scripts", rpm]).stdout
    for scriptlet, needle in [("preinstall", "useradd -r -g sockherd"), ("postinstall", "preset sockherd.service"),
                              ("preuninstall", "disable --now sockherd.service"),
                              ("postuninstall", "try-restart sockherd.service")]:
        m = re.search(scriptlet + r" scriptlet.*?:\n(.*?)(?=\n\S+ scriptlet|\Z)", scripts, re.S)
        check(m is not None and needle in m.group(1), f"rpm --scripts: {scriptlet} runs `{needle}`")

    bad = []
    requires = run(["rpm", "-qpR", rpm]).stdout.splitlines()
    for req in (r.strip() for r in requires):
        if req in RPM_PLAIN_REQUIRES or req.startswith("rpmlib(") or req == f"config(sockherd) = {VERSION}-1":
            continue
        m = re.fullmatch(r"([^()\s]+)\(([A-Z]+_[0-9.]+)?\)\(64bit\)", req)
        if m and m.group(1) in RHEL9_LIBRARIES and (m.group(2) is None or version_ok(m.group(2))):
            continue
        bad.append(req)
    check(requires and not bad, f"rpm -qpR: {len(requires)} requirements, all on RHEL 9 / Fedora"
          + (f"; not: {bad}" if bad else ""))
    check("/etc/sockherd/sockherd.toml" in run(["rpm", "-qp", "--configfiles", rpm]).stdout.split(),
          "rpm --configfiles: /etc/sockherd/sockherd.toml")
    flags = run(["rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", rpm]).stdout
    m = re.search(r"^(\S*) /etc/sockherd/sockherd\.toml$", flags, re.M)
    check(m is not None and "c" in m.group(1) and "n" in m.group(1), "the config is %config(noreplace)")


def test_unit():
    binary = os.path.join(PACKAGE_DIR, "sockherd")
    if not os.path.isfile(binary):
        raise AssertionError(f"no {binary}: run `sh packaging/build.sh` first")
    with open(os.path.join(ROOT, "packaging", "sockherd.service")) as f:
        unit = f.read()
    for key in ["Type=notify", "ExecStartPre=/usr/bin/sockherd check-config /etc/sockherd/sockherd.toml",
                "ExecReload=/usr/bin/sockherd reload", "KillSignal=SIGTERM", "Restart=on-failure",
                "User=sockherd", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "RuntimeDirectory=sockherd",
                "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"]:
        check(re.search("^" + re.escape(key), unit, re.M) is not None, f"the unit has {key}")
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", unit, re.M)
    drain = re.search(r'^drain_timeout = "(\d+)s"', open(os.path.join(ROOT, "etc", "default.toml")).read(), re.M)
    check(stop and drain and int(stop.group(1)) > int(drain.group(1)),
          "TimeoutStopSec is longer than the default drain_timeout")
    nofile = re.search(r"^LimitNOFILE=(\d+)$", unit, re.M)
    check(nofile and int(nofile.group(1)) >= 65536, "LimitNOFILE is high")
    tmp = tempfile.mkdtemp(prefix="sockherd-unit-")
    try:
        path = os.path.join(tmp, "sockherd.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/bin/sockherd", binary))
        # Documentation=man:sockherd(8) is checked with man(1): the page from the source tree.
        os.makedirs(os.path.join(tmp, "man", "man8"))
        shutil.copy(os.path.join(ROOT, "packaging", "sockherd.8"), os.path.join(tmp, "man", "man8"))
        v = run(["systemd-analyze", "verify", path], check_rc=False,
                env=dict(os.environ, MANPATH=os.path.join(tmp, "man")))
        check(v.returncode == 0 and not (v.stdout + v.stderr).strip(),
              f"systemd-analyze verify (rc {v.returncode}){v.stdout}{v.stderr}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    tests = {"deb": test_deb, "rpm": test_rpm, "unit": test_unit}
    if len(sys.argv) != 2 or sys.argv[1] not in tests:
        print(f"usage: {sys.argv[0]} {'|'.join(tests)}", file=sys.stderr)
        return 2
    if not VERSION:
        print("SOCKHERD_VERSION is not set", file=sys.stderr)
        return 2
    if sys.argv[1] == "deb" and os.geteuid() != 0:
        print("SKIP: packaging.deb installs the package on this machine: run the tests as root", file=sys.stderr)
        return 77
    try:
        tests[sys.argv[1]]()
    except (AssertionError, subprocess.SubprocessError, OSError) as e:
        failures.append(str(e))
        log(f"FAIL: {e}")
    if failures:
        log(f"\n{len(failures)} check(s) failed")
        return 1
    log("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
