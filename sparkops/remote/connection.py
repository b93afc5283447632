"""Running argv on a node: this machine directly, or another over SSH with fabric.

Host keys are checked against known_hosts (the cluster's file, else the user's): a
long-lived cluster must not silently accept a changed key. Every call has a timeout.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConnectError

LOCAL_HOSTS = ("local",)


@dataclass(frozen=True)
class Result:
    node: str
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tail(self, lines: int = 30) -> list[str]:
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).rstrip()
        return text.splitlines()[-lines:] if text else []


class CommandTimeout(Exception):
    def __init__(self, node: str, argv, timeout: float, partial: str = ""):
        super().__init__(f"{shlex.join(argv)} did not finish within {timeout:.0f}s")
        self.node, self.argv, self.timeout, self.partial = node, tuple(argv), timeout, partial


class NodeConn:
    """One node. `run` takes argv and an optional stdin text (how secrets travel)."""

    def __init__(self, node: dict, ssh: dict):
        self.name = node["name"]
        self.host = node["host"]
        self.node = node
        self.ssh = ssh
        self._fabric = None

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    def label(self) -> str:
        return self.name if self.is_local else f"{self.name} ({self.host})"

    def connect(self) -> None:
        if self.is_local or self._fabric is not None:
            return
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
        self._fabric = conn

    def run(self, argv, *, timeout: float, stdin: str | None = None) -> Result:
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
            from .stream import run_piped
            return run_piped(self, argv, stdin=stdin, timeout=timeout)
        from invoke.exceptions import CommandTimedOut

        self.connect()
        try:
            res = self._fabric.run(shlex.join(argv), hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut as exc:
            raise CommandTimeout(self.name, argv, timeout, exc.result.stdout) from None
        except (OSError, EOFError) as exc:
            self.close()
            raise ConnectError(f"lost the SSH connection to {self.host}: {exc}", host=self.name,
                               fix="check the node is up and reachable") from None
        return Result(self.name, argv, res.exited, res.stdout, res.stderr, time.monotonic() - start)

    def stream(self, argv, on_line) -> None:
        """Run argv with no timeout, handing each output line to on_line (for `--follow`)."""
        if self.is_local:
            with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
                for line in proc.stdout:
                    on_line(line.rstrip("\n"))
            return
        self.connect()
        self._fabric.run(shlex.join(argv), hide=False, warn=True, pty=False, in_stream=False,
                         out_stream=_LineWriter(on_line), err_stream=_LineWriter(on_line))

    def write_file(self, path: str, content: str, mode: int, *, timeout: float = 30) -> Result:
        """Write a file atomically. It is born 0600 and empty, so a secret is never readable by
        others, even for a moment; it gets its final mode before it takes the real name."""
        start = time.monotonic()
        tmp = f"{path}.sparkops-tmp"
        try:
            if self.is_local:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(content)
                os.chmod(tmp, mode)
                os.replace(tmp, path)
            else:
                self.connect()
                sftp = self._fabric.sftp()
                sftp.get_channel().settimeout(timeout)
                with sftp.open(tmp, "w") as handle:
                    handle.chmod(0o600)
                    handle.write(content.encode())
                sftp.chmod(tmp, mode)
                sftp.posix_rename(tmp, path)
        except OSError as exc:
            return Result(self.name, ("write", path), 1, "", f"{type(exc).__name__}: {exc}",
                          time.monotonic() - start)
        return Result(self.name, ("write", path), 0, "", "", time.monotonic() - start)

    def close(self) -> None:
        if self._fabric is not None:
            try:
                self._fabric.close()
            finally:
                self._fabric = None


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


class _LineWriter:
    """A file-like sink for fabric's output streams that calls back once per whole line."""

    def __init__(self, on_line):
        self.on_line, self.buffer = on_line, ""

    def write(self, text: str) -> None:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.on_line(line)

    def flush(self) -> None:
        pass
