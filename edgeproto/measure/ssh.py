"""The SSH transport to a board: the OpenSSH client only (``ssh``/``scp``), ``BatchMode=yes`` so
nothing ever prompts, ``ConnectTimeout``, host keys checked as the user's ssh configuration says
(``known_hosts`` only points ``UserKnownHostsFile`` at another file), every remote argument
``shlex.quote``-d, and ssh's failures turned into one clear EdgeprotoError.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from edgeproto.errors import EdgeprotoError

_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+$")


def _ssh_option(key: str, value) -> list[str]:
    text = str(value)
    if any(c.isspace() for c in text) or '"' in text:
        if '"' in text:
            raise EdgeprotoError(f"ssh option {key}: a path with a double quote is not supported: {text!r}")
        text = f'"{text}"'
    return ["-o", f"{key}={text}"]


class SshTarget:
    """How to reach the board with the OpenSSH client (``ssh``/``scp``), never prompting."""

    def __init__(self, host: str, port: int | None = None, identity: str | None = None,
                 known_hosts: str | None = None, connect_timeout: int = 10) -> None:
        if not host or not _HOST.match(host):
            raise EdgeprotoError(f"--host must be USER@HOST or HOST (letters, digits, '.', '-', '_'); got {host!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise EdgeprotoError(f"--port must be 1..65535 (got {port!r})")
        for name, path in (("--identity", identity), ("--known-hosts", known_hosts)):
            if path is not None and not Path(path).is_file():
                raise EdgeprotoError(f"{name} {path}: no such file")
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise EdgeprotoError(f"remote bench needs the OpenSSH client ({tool}), which is not installed")
        self.host, self.port, self.identity, self.known_hosts = host, port, identity, known_hosts
        self.connect_timeout = int(connect_timeout)

    def options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.port is not None:
            opts += ["-o", f"Port={self.port}"]
        if self.identity is not None:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            opts += _ssh_option("UserKnownHostsFile", Path(self.known_hosts).resolve())
        return opts

    @property
    def where(self) -> str:
        return self.host + (f" (port {self.port})" if self.port else "")

    def _fail(self, stderr: str, what: str) -> EdgeprotoError:
        text = stderr.strip()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently added")]
        last = lines[-1] if lines else "no message"
        if "Permission denied" in text:
            return EdgeprotoError(
                f"SSH refused the key for {self.where} ({last.strip()}): check --identity and the board's "
                "authorized_keys (BatchMode: no password prompt)")
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return EdgeprotoError(
                f"the host key of {self.where} is unknown or changed (Host key verification failed): connect "
                "once with ssh to check and accept it, or pass --known-hosts FILE")
        for pattern in ("Connection refused", "Connection timed out", "No route to host", "Could not resolve",
                        "Network is unreachable", "Connection closed", "Connection reset", "timed out"):
            if pattern in text:
                return EdgeprotoError(f"cannot reach {self.where} over SSH while {what}: {last.strip()}")
        return EdgeprotoError(f"ssh to {self.where} failed while {what}: {last.strip()}")

    def run(self, remote_argv: list[str], *, timeout: float, what: str) -> subprocess.CompletedProcess:
        """Run a command on the board (every argument quoted); ssh's own failures raise."""
        command = " ".join(shlex.quote(str(a)) for a in remote_argv)
        argv = ["ssh", *self.options(), "--", self.host, command]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgeprotoError(f"{self.where} did not finish {what} within {timeout:.0f} s") from None
        if done.returncode == 255:
            raise self._fail(done.stderr, what)
        return done

    def copy(self, local: Path, remote: str, *, timeout: float) -> None:
        argv = ["scp", "-q", "-r", *self.options(), "--", str(local), f"{self.host}:{remote}"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgeprotoError(f"copying the bundle to {self.where} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            if done.returncode == 255 or "Permission denied" in done.stderr or "Connection" in done.stderr:
                raise self._fail(done.stderr, "copying the bundle")
            raise EdgeprotoError(f"scp of the bundle to {self.where} failed: {done.stderr.strip()[-400:]}")
