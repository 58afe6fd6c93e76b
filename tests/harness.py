"""Real parts for tests: an OpenSSH sshd on loopback, an unprivileged user, and real filesystems.

Everything here is real: sshd is /usr/sbin/sshd with its own host key, the user is made with
useradd, the filesystems are tmpfs mounts. Each helper cleans up after itself even when the test
that used it fails. When a part cannot be had (sshd missing, not root), the helpers raise: a test
that needs sshd must fail, never skip, so a missing component cannot hide behind a green run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEST_USER = "smtest"
# Two more accounts on the same sshd, for servers that are not well behaved: one whose PATH holds
# no python3, one whose login shell prints noise on stdout before running anything.
NO_PYTHON_USER = "smnopy"
NOISY_USER = "smnoisy"
NOISY_SHELL = "/usr/local/bin/servermove-test-noisy-shell"
# sudo: one account that must give its password, one allowed without (NOPASSWD).
SUDO_USER = "smsudo"
SUDO_PASSWORD = "correct horse battery staple"
NOPASSWD_USER = "smnopw"
# One file per test run: two runs on one machine (two worktrees) must not remove each other's.
SUDOERS_FILE = Path(f"/etc/sudoers.d/servermove-test-{os.getpid()}")
SSH_ALIAS = "smtest-host"
SSHD = "/usr/sbin/sshd"


class HarnessError(RuntimeError):
    """A real part the tests need could not be set up."""


def run(*cmd: str | os.PathLike[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=check, capture_output=True, text=True,
                          **kwargs)


def ensure_test_user(name: str = TEST_USER, shell: str = "/bin/sh") -> pwd.struct_passwd:
    """Create (once) an unprivileged user that sshd will let in with a key."""
    if os.geteuid() != 0:
        raise HarnessError("the test harness must run as root (it mounts tmpfs and adds a user)")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        run("useradd", "--create-home", "--shell", shell, name)
        entry = pwd.getpwnam(name)
    if entry.pw_shell != shell:
        run("usermod", "--shell", shell, name)
        entry = pwd.getpwnam(name)
    # useradd leaves the account locked ("!" in the password field); sshd without PAM refuses
    # locked accounts even for key logins. "*" means: no password login, but not locked.
    run("usermod", "-p", "*", name)
    return entry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def user_owned_dir(parent: Path, user: str = TEST_USER) -> Path:
    """A fresh directory the test user owns, inside a parent everyone can traverse."""
    entry = pwd.getpwnam(user)
    path = Path(tempfile.mkdtemp(dir=parent))
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755)
    return path


@dataclass
class SshServer:
    """A running sshd and the client-side files that reach it."""

    root: Path
    port: int
    user: str
    alias: str
    config_file: Path  # an ssh_config with the alias, for `ssh -F` and for the code under test
    client_key: Path
    known_hosts: Path
    host_key: Path
    host_public_key: str  # "ssh-ed25519 AAAA..." as in the host's .pub file
    process: subprocess.Popen

    def ssh(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command through the real OpenSSH client with our config file."""
        return run("ssh", "-F", self.config_file, "-o", "BatchMode=yes", self.alias, *command,
                   check=check, timeout=30)

    def write_config(self, path: Path, *, alias: str | None = None, user: str | None = None,
                     known_hosts: Path | None = None, extra: str = "") -> Path:
        """Write an ssh_config for this server, e.g. with an empty known_hosts file."""
        path.write_text(
            f"Host {alias or self.alias}\n"
            f"    HostName 127.0.0.1\n"
            f"    Port {self.port}\n"
            f"    User {user or self.user}\n"
            f"    IdentityFile {self.client_key}\n"
            f"    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {known_hosts or self.known_hosts}\n"
            f"    StrictHostKeyChecking yes\n"
            f"{extra}"
        )
        return path

    def stop(self) -> None:
        SUDOERS_FILE.unlink(missing_ok=True)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_sshd(root: Path, user: str = TEST_USER, extra_config: str = "") -> SshServer:
    """Start a real sshd on 127.0.0.1 with its own host key and a client key for `user`."""
    if not Path(SSHD).exists():
        raise HarnessError(f"{SSHD} not found: install openssh-server (the README's test command "
                           "does)")
    entry = ensure_test_user(user)
    ensure_test_user(NO_PYTHON_USER)
    Path(NOISY_SHELL).write_text(
        "#!/bin/sh\n"
        "# A login shell with chatty rc files: noise on stdout before the command runs.\n"
        "echo 'Welcome to a test server! Last login: yesterday'\n"
        "echo '{\"not\": \"an event\"'\n"
        "exec /bin/sh \"$@\"\n")
    Path(NOISY_SHELL).chmod(0o755)
    ensure_test_user(NOISY_USER, shell=NOISY_SHELL)
    ensure_test_user(SUDO_USER)
    ensure_test_user(NOPASSWD_USER)
    run("chpasswd", input=f"{SUDO_USER}:{SUDO_PASSWORD}\n")
    if not Path("/usr/bin/sudo").exists():
        raise HarnessError("sudo not found: install it (the README's test command does)")
    SUDOERS_FILE.write_text(f"{SUDO_USER} ALL=(root) ALL\n"
                            f"{NOPASSWD_USER} ALL=(root) NOPASSWD: ALL\n")
    SUDOERS_FILE.chmod(0o440)
    root.mkdir(parents=True, exist_ok=True)
    # sshd's privilege separation needs this directory; it exists only when sshd ran as a service.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = root / "ssh_host_ed25519_key"
    client_key = root / "client_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "servermove-test-host", "-f", host_key)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "servermove-test-client", "-f",
        client_key)
    authorized = root / "authorized_keys"
    shutil.copyfile(client_key.with_suffix(".pub"), authorized)
    authorized.chmod(0o644)
    os.chown(authorized, entry.pw_uid, entry.pw_gid)
    root.chmod(0o755)

    port = free_port()
    host_public_key = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n")
    sshd_config = root / "sshd_config"
    sshd_config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "UsePAM no\n"
        "StrictModes no\n"
        f"AllowUsers {user} {NO_PYTHON_USER} {NOISY_USER} {SUDO_USER} {NOPASSWD_USER}\n"
        # Many concurrent moves to one host are part of the tests.
        "MaxStartups 100:30:200\n"
        "MaxSessions 100\n"
        "LogLevel VERBOSE\n"
        f"{extra_config}"
        # Match blocks last: they apply to everything after them.
        f"Match User {NO_PYTHON_USER}\n"
        "    SetEnv PATH=/nonexistent-bin:/bin-without-python\n"
    )
    run(SSHD, "-t", "-f", sshd_config)
    log = open(root / "sshd.log", "w")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(sshd_config)], stdout=log,
                               stderr=subprocess.STDOUT)
    server = SshServer(root=root, port=port, user=user, alias=SSH_ALIAS,
                       config_file=root / "ssh_config", client_key=client_key,
                       known_hosts=known_hosts, host_key=host_key,
                       host_public_key=host_public_key, process=process)
    server.write_config(server.config_file)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(f"sshd exited with {process.returncode}: "
                               f"{(root / 'sshd.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return server
        time.sleep(0.05)
    server.stop()
    raise HarnessError(f"sshd did not listen on 127.0.0.1:{port} within 10 s")


@contextlib.contextmanager
def mounted_tmpfs(size: str = "256m", *, parent: Path | None = None,
                  mode: str = "0755", inodes: int | None = None) -> Iterator[Path]:
    """Mount a fresh tmpfs (a second, real filesystem) and unmount it afterwards, whatever happens.

    `size` may be tiny ("64k") to stage a real disk-full; `inodes` caps the number of inodes.
    """
    if os.geteuid() != 0:
        raise HarnessError("mounting a tmpfs needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="sm-tmpfs-", dir=parent))
    mountpoint.chmod(0o755)
    options = f"size={size},mode={mode}"
    if inodes is not None:
        options += f",nr_inodes={inodes}"
    run("mount", "-t", "tmpfs", "-o", options, "servermove-test", mountpoint)
    try:
        yield mountpoint
    finally:
        result = run("umount", mountpoint, check=False)
        if result.returncode != 0:
            # Something still holds it open (a process the test started): detach it anyway so
            # no mount outlives the suite.
            run("umount", "-l", mountpoint, check=False)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def fill_up(path: Path) -> None:
    """Write `path` until its filesystem is full (a real ENOSPC, as another process would)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def as_user(user: str = TEST_USER) -> dict:
    """subprocess keyword arguments that run a child as `user` (a real unprivileged process)."""
    entry = pwd.getpwnam(user)

    def demote() -> None:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": entry.pw_dir, "USER": user,
           "LANG": "C.UTF-8"}
    return {"preexec_fn": demote, "env": env}


PG_VERSION = "15"


@dataclass
class PgCluster:
    """A throwaway PostgreSQL cluster made by Debian's pg_createcluster."""

    version: str
    name: str
    port: int
    data_dir: Path
    config_file: Path  # postgresql.conf, which names the data directory

    def ctl(self, action: str) -> list[str]:
        """The pg_ctlcluster command (an argv, no shell) that starts or stops the cluster."""
        return ["pg_ctlcluster", self.version, self.name, action]

    def psql(self, sql: str) -> str:
        """Run SQL as the postgres superuser; its output, unaligned and without headers."""
        return run("runuser", "-u", "postgres", "--", "psql", "-X", "-p", str(self.port),
                   "-v", "ON_ERROR_STOP=1", "-Atc", sql, timeout=60).stdout.strip()


def _cluster_exists(version: str, name: str) -> bool:
    return Path("/etc/postgresql", version, name).exists()


@contextlib.contextmanager
def postgres_cluster(parent: Path) -> Iterator[PgCluster]:
    """Create and start a PostgreSQL cluster on a free port with its data in a fresh directory
    under `parent` (which user postgres must be able to traverse); drop it afterwards, running
    or not, whatever happened. Fails (never skips) when postgresql is not installed."""
    if not shutil.which("pg_createcluster"):
        raise HarnessError("pg_createcluster not found: install postgresql (the README's test "
                           "command does)")
    name = f"smtest-{secrets.token_hex(4)}"
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="sm-pg-", dir=parent))
    home.chmod(0o755)
    cluster = PgCluster(PG_VERSION, name, port, home / "data",
                        Path("/etc/postgresql", PG_VERSION, name, "postgresql.conf"))
    try:
        run("pg_createcluster", PG_VERSION, name, "-p", str(port), "-d", cluster.data_dir,
            timeout=120)
        run(*cluster.ctl("start"), timeout=120)
        yield cluster
    finally:
        drop_cluster(cluster)
        shutil.rmtree(home, ignore_errors=True)


def drop_cluster(cluster: PgCluster) -> None:
    """pg_dropcluster --stop, with an immediate stop first if a plain drop fails (a server
    started from another data directory by the test); raise if the cluster is still there."""
    if not _cluster_exists(cluster.version, cluster.name):
        return
    dropped = run("pg_dropcluster", "--stop", cluster.version, cluster.name, check=False,
                  timeout=120)
    if dropped.returncode != 0:
        run("pg_ctlcluster", cluster.version, cluster.name, "stop", "-m", "immediate",
            check=False, timeout=120)
        dropped = run("pg_dropcluster", "--stop", cluster.version, cluster.name, check=False,
                      timeout=120)
    Path(f"/var/log/postgresql/postgresql-{cluster.version}-{cluster.name}.log").unlink(
        missing_ok=True)
    if _cluster_exists(cluster.version, cluster.name):
        raise HarnessError(f"could not drop the test cluster {cluster.version}/{cluster.name}: "
                           f"{dropped.stderr.strip()}")
