"""A real OpenSSH sshd on 127.0.0.1 for SFTP tests: temp host key, client key, free port.

    with Sshd(tmp_path / "sshd") as server:
        server.known_hosts      # a known_hosts file pinning the host key
        server.fingerprint      # "SHA256:..." of the host key
        server.client_key       # private key file accepted for server.user

Key-only authentication; the process runs ``sshd -D -e -f CONFIG`` and is stopped by its
pid. Needs /usr/sbin/sshd (package openssh-server) and ssh-keygen.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from engine.testing.peers import free_port

SSHD = "/usr/sbin/sshd"
START_SECS = 10.0


def available() -> str | None:
    """None when a real sshd can run here, else why not (for pytest.skip)."""
    if not Path(SSHD).exists():
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    return None


def keygen(path: Path) -> None:
    """An unencrypted Ed25519 key pair at ``path`` and ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "junction-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def public_fingerprint(pub_line: str) -> str:
    """The SHA256 fingerprint of an OpenSSH public key line, as ssh-keygen -lf prints it."""
    blob = base64.b64decode(pub_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


class Sshd:
    """One sshd process with its own keys and config under ``directory``."""

    def __init__(self, directory: Path, user: str | None = None, port: int = 0) -> None:
        """``port`` 0 picks a free port at start; a restarted instance keeps its port and keys."""
        self.directory = directory
        self.user = user or getpass.getuser()
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.host_key = directory / "hostkey"
        self.client_key = directory / "clientkey"
        self.other_key = directory / "otherkey"  # a key the server does not accept
        self.known_hosts = directory / "known_hosts"
        self.wrong_known_hosts = directory / "known_hosts.wrong"  # pins another host key
        self.log_path = directory / "sshd.log"

    @property
    def fingerprint(self) -> str:
        return public_fingerprint(self.host_key.with_suffix(".pub").read_text())

    def start(self) -> Sshd:
        problem = available()
        if problem:
            raise RuntimeError(problem)
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this sshd is already running")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        for key in (self.host_key, self.client_key, self.other_key):
            if not key.exists():
                keygen(key)
        authorized = self.directory / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        self.port = self.port or free_port()
        config = self.directory / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.directory / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            f"AllowUsers {self.user}\n"
            "MaxStartups 100:30:200\n"
            "Subsystem sftp internal-sftp\n"
        )
        host_pub = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        other_pub = " ".join(self.other_key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        self.wrong_known_hosts.write_text(f"[127.0.0.1]:{self.port} {other_pub}\n")
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True, capture_output=True, timeout=30)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + START_SECS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"sshd did not listen on port {self.port} within {START_SECS}s")

    def stop(self) -> None:
        """Terminate this sshd (by its pid) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
