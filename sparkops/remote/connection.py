"""Running argv on a node: this machine directly, or another over SSH with fabric.

Host keys are checked against known_hosts (the cluster's file, else the user's): a
long-lived cluster must not silently accept a changed key. Every call has a timeout.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sparkops.base.errors import ConnectError
from sparkops.base.files import atomic_write
from sparkops.remote import stream
from sparkops.remote.result import CommandTimeout, Result

LOCAL_HOSTS = ("local",)
KEEPALIVE_S = 15  # seconds without traffic before an SSH keepalive (one small packet)


class NodeConn:
    """One node. `run` takes argv and an optional stdin text (how secrets travel)."""

    def __init__(self, node: dict, ssh: dict):
        self.name = node["name"]
        self.host = node["host"]
        self.node = node
        self.ssh = ssh
        self._fabric: Any = None  # fabric.Connection, once connected

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    def label(self) -> str:
        return self.name if self.is_local else f"{self.name} ({self.host})"

    def connect(self) -> Any:
        """Open the SSH connection (once) and return it: a fabric Connection (None locally)."""
        if self.is_local or self._fabric is not None:
            return self._fabric
        import paramiko
        from fabric import Config, Connection

        kwargs = {"banner_timeout": self.ssh["connect_timeout_s"], "auth_timeout": self.ssh["connect_timeout_s"]}
        if self.node.get("key"):
            kwargs["key_filename"] = [self.node["key"]]
        config_file = self.ssh.get("config_file")
        config = Config(runtime_ssh_path=config_file) if config_file else Config()
        conn = Connection(self.host, user=self.node.get("user"), port=self.node.get("port"),
                          connect_timeout=self.ssh["connect_timeout_s"], connect_kwargs=kwargs,
                          config=config)
        # fabric auto-adds unknown host keys by default; a fixed cluster must not.
        if self.ssh.get("strict_host_keys", True):
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        known = self.ssh.get("known_hosts")
        if known:
            conn.client.load_host_keys(str(Path(known).expanduser()))
        else:
            conn.client.load_system_host_keys()
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise ConnectError(
                f"host key of {self.host} changed: {exc.key.get_name()} key does not match known_hosts",
                host=self.name, step="connect",
                fix=f"if the node was reinstalled, remove its old key (`ssh-keygen -R {self.host}`) "
                    f"and record the new one with `inv setup --trust-host-keys`") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ConnectError(
                    f"{self.host} is not in known_hosts", host=self.name, step="connect",
                    fix="record its key once: `inv setup --trust-host-keys` (shows the fingerprint "
                        "to compare), or `ssh " + self.host + "` and accept it") from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise ConnectError(
                    f"SSH login to {self.node.get('user') or ''}@{self.host} was refused: {exc}",
                    host=self.name, step="connect",
                    fix=f"install your key on the node: `ssh-copy-id {self.host}`") from None
            raise ConnectError(f"SSH to {self.host} failed: {exc}", host=self.name, step="connect",
                               fix="check that sshd runs on the node and the address is right") from None
        except (TimeoutError, OSError) as exc:
            raise ConnectError(
                f"cannot reach {self.host}:{self.node.get('port') or 22}: {exc or 'timed out'}",
                host=self.name, step="connect",
                fix="check the node is on and the address in the cluster file or "
                    "sparkops.local.toml is right (`inv setup` rewrites it)") from None
        # An SSH keepalive on idle connections (a worker's, while `up --wait` queues or a
        # benchmark runs for an hour): the traffic keeps NAT and firewall state from expiring
        # under them, and gives our TCP stack data in flight, so a dead link is noticed at its
        # retransmission timeout instead of never. It does not free the head's lock: that needs
        # the node to notice we are gone, and sshd sends no probes of its own unless configured
        # to (ClientAliveInterval); the lock's in-band heartbeat (apply/lock.py) does it.
        transport = conn.client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_S)
        self._fabric = conn
        return conn

    def run(self, argv: Sequence[str], *, timeout: float, stdin: str | None = None) -> Result:
        argv = tuple(argv)
        start = time.monotonic()
        if self.is_local:
            try:
                proc = subprocess.run(argv, input=stdin if stdin is not None else "", text=True,
                                      capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise CommandTimeout(self.name, argv, timeout, _text(exc.stdout)) from None
            except FileNotFoundError as exc:
                return Result(self.name, argv, 127, "", str(exc), time.monotonic() - start)
            return Result(self.name, argv, proc.returncode, proc.stdout, proc.stderr,
                          time.monotonic() - start)
        if stdin is not None:
            return self.run_piped(argv, stdin=stdin, timeout=timeout)
        from invoke.exceptions import CommandTimedOut

        conn = self.connect()
        try:
            res = conn.run(shlex.join(argv), hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut as exc:
            raise CommandTimeout(self.name, argv, timeout, exc.result.stdout) from None
        except _broken_connection() as exc:
            raise self._lost_connection(exc) from None
        return Result(self.name, argv, res.exited, res.stdout, res.stderr, time.monotonic() - start)

    def run_piped(self, argv: Sequence[str], *, stdin: str, timeout: float,
                  on_line: Callable[[str], None] | None = None) -> Result:
        """Run argv with a stdin of any size, handing each output line to on_line as it comes."""
        if self.is_local:
            return stream.run_local(self.name, argv, stdin=stdin, timeout=timeout, on_line=on_line)
        client = self.connect().client
        try:
            return stream.run_channel(client, self.name, argv, stdin=stdin, timeout=timeout,
                                      on_line=on_line)
        except _broken_connection() as exc:
            raise self._lost_connection(exc) from None

    def follow(self, argv: Sequence[str], on_line: Callable[[str], None], stop: threading.Event) -> None:
        """Run argv with no timeout (`tail -F`), handing each output line to on_line, until it
        ends or `stop` is set (for `--follow`)."""
        if self.is_local:
            stream.follow_local(argv, on_line, stop)
        else:
            stream.follow_channel(self.connect().client, argv, on_line, stop)

    def hold(self, argv: Sequence[str]) -> stream.Held:
        """Start argv with its stdin kept open until `release()` (or until this process ends):
        what holds a lock on the node for as long as we live."""
        if self.is_local:
            return stream.hold_local(argv)
        try:
            return stream.hold_channel(self.connect().client, argv)
        except _broken_connection() as exc:
            raise self._lost_connection(exc) from None

    def write_file(self, path: str, content: str, mode: int, *, timeout: float = 30) -> Result:
        """Write a file atomically, so a secret is never readable by others, even for a moment:
        here it is born 0600 (mkstemp); on a node it is created empty under a temporary name, made
        0600 before the first byte is written, and gets its final mode before the real name."""
        start = time.monotonic()
        tmp = f"{path}.sparkops-tmp"
        try:
            if self.is_local:
                atomic_write(path, content, mode=mode)
            else:
                sftp = self.connect().sftp()
                sftp.get_channel().settimeout(timeout)
                with sftp.open(tmp, "w") as handle:
                    handle.chmod(0o600)
                    handle.write(content.encode())
                sftp.chmod(tmp, mode)
                sftp.posix_rename(tmp, path)
        except _broken_connection() as exc:  # a full disk, a missing folder, or a lost node
            if self._fabric is not None and not self._fabric.is_connected:
                self.close()  # the next command connects afresh
            return Result(self.name, ("write", path), 1, "", f"{type(exc).__name__}: {exc}",
                          time.monotonic() - start)
        return Result(self.name, ("write", path), 0, "", "", time.monotonic() - start)

    def put_file(self, local: str | Path, path: str, *, timeout: float = 60,
                 on_bytes: Callable[[int], None] | None = None) -> Result:
        """Copy a file of this machine, of any size, to the node (over SFTP; a plain copy when
        the node is this machine). It takes its name only once complete. `timeout` bounds each
        wait for the node, not the whole copy; on_bytes gets the bytes sent so far."""
        start = time.monotonic()
        tmp = f"{path}.sparkops-tmp"
        try:
            if self.is_local:
                shutil.copyfile(local, tmp)
                os.replace(tmp, path)
            else:
                sftp = self.connect().sftp()
                sftp.get_channel().settimeout(timeout)
                sftp.put(str(local), tmp, callback=(lambda sent, _total: on_bytes(sent)) if on_bytes else None)
                sftp.posix_rename(tmp, path)
        except _broken_connection() as exc:  # a full disk, a missing folder, or a lost node
            if self._fabric is not None and not self._fabric.is_connected:
                self.close()
            return Result(self.name, ("put", str(local), path), 1, "", f"{type(exc).__name__}: {exc}",
                          time.monotonic() - start)
        return Result(self.name, ("put", str(local), path), 0, "", "", time.monotonic() - start)

    def _lost_connection(self, exc: BaseException) -> ConnectError:
        """The connection broke under a command (the node went down, sshd was killed): drop it,
        so that the next command connects afresh, and say so."""
        self.close()
        return ConnectError(f"lost the SSH connection to {self.host}: {exc}", host=self.name,
                            fix="check the node is up and reachable")

    def close(self) -> None:
        if self._fabric is not None:
            try:
                self._fabric.close()
            finally:
                self._fabric = None


def _broken_connection() -> tuple[type[BaseException], ...]:
    """What a broken SSH connection raises: socket errors, EOF, and paramiko's own (a reconnect
    that finds sshd gone: "Error reading SSH protocol banner"). Only evaluated when an
    exception is being matched, so paramiko stays unimported for local-only clusters."""
    import paramiko
    return (OSError, EOFError, paramiko.SSHException)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")
