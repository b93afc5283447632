"""`inv download`: the profile's model into the head's Hugging Face cache, once.

Download runs where sparkops runs, which is the head (`host = "local"`, as on spark-pair):
huggingface_hub's `snapshot_download` with the profile's pinned revision and allow/ignore
patterns, the token from the config's secrets (the local override file or HF_TOKEN; handed
over in-process, never on a command line, never printed). The hub resumes interrupted
files itself (`*.incomplete` blobs). Workers never download: `inv sync` copies to them.
Without internet, `--local-dir DIR` imports a folder of the model's files instead. Either
holds the cluster's lock (apply/lock.py) while it writes.
"""
from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from sparkops.apply.lock import cluster_lock
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress
from sparkops.base.units import gb
from sparkops.config import Config
from sparkops.config.weights import download_patterns
from sparkops.facts.session import cluster_session
from sparkops.models.local_import import import_local_dir
from sparkops.node_scripts.hf_cache import repo_dir
from sparkops.node_scripts.smoke_model import REPO_ID as SMOKE_REPO
from sparkops.remote.connection import LOCAL_HOSTS

HUB = "https://huggingface.co"


@dataclass(frozen=True)
class DownloadResult:
    snapshot: str
    seconds: float
    imported: bool
    bytes: int | None = None


def head_hf_home(cfg: Config) -> Path:
    head = cfg.nodes[0]
    if head["host"] not in LOCAL_HOSTS:
        raise SparkopsError(
            f"download runs on the head, and the head {head['name']} ({head['host']}) is not this machine",
            step="download",
            fix=f"run sparkops on {head['name']} (its cluster file names it `host = \"local\"`), or put "
                "the model into its Hugging Face cache there, then `inv sync`")
    return Path(os.path.expanduser(cfg.cluster["paths"]["hf_home"]))


def download(cfg: Config, *, local_dir: str | None = None, progress: Progress,
             wait: float | None = None) -> DownloadResult:
    """Under the cluster's lock: `sync` and `up` read the cache this writes. `wait`: seconds to
    wait for another operation's lock (None: refuse, naming it); inside `up --sync`, which
    holds the lock already, the hold is shared."""
    hf_home = head_hf_home(cfg)
    with cluster_session(cfg, [cfg.nodes[0]["name"]], gather=False) as session, \
            cluster_lock(session, "download", wait=wait, progress=progress):
        return _download(cfg, hf_home, local_dir, progress)


def _download(cfg: Config, hf_home: Path, local_dir: str | None, progress: Progress) -> DownloadResult:
    m = cfg.model
    flag = f"--profile {cfg.profile} --cluster {cfg.cluster_name}" + (" --dummy-weights" if cfg.dummy_weights else "")
    allow, ignore = download_patterns(cfg.doc)
    what = "its config and tokenizer (random weights: no weight files)" if cfg.dummy_weights else ""
    start = time.monotonic()
    if local_dir:
        progress.say(f"importing {local_dir} as {m['repo']} into {repo_dir(hf_home, m['repo'])}"
                     + (f": {what}" if what else ""))
        done = import_local_dir(Path(local_dir), hf_home, m["repo"], m.get("revision"), allow, ignore, progress)
        progress.say(f"imported {done.files} files, {gb(done.bytes)} ({gb(done.copied_bytes)} new)")
        return DownloadResult(str(done.snapshot), time.monotonic() - start, True, done.bytes)
    if m["repo"] == SMOKE_REPO:
        raise SparkopsError(f"{m['repo']} is generated on each node, not downloaded from the hub",
                            step="download", fix=f"`inv smoke-model --cluster {cfg.cluster_name}`")
    token = cfg.secrets.get("hf_token") or None
    page = f"{HUB}/{m['repo']}"
    if m.get("gated") and not token:
        raise SparkopsError(f"{m['repo']} is gated: downloading it needs a Hugging Face token",
                            step="download",
                            fix=f"accept the license at {page} with your account, create a read token "
                                f"(https://huggingface.co/settings/tokens) and store it with "
                                f"`inv setup --hf-token-stdin` (or set HF_TOKEN), then `inv download {flag}`")
    size = what or f"about {m.get('download_gb', 0):g} GB"
    progress.say(f"downloading {m['repo']}@{m.get('revision') or 'main'} ({size}) into {hf_home / 'hub'}")
    from huggingface_hub import snapshot_download
    try:
        path = snapshot_download(m["repo"], revision=m.get("revision"), cache_dir=str(hf_home / "hub"),
                                 allow_patterns=allow, ignore_patterns=ignore, token=token)
    except Exception as exc:  # each hub failure becomes a message with its fix
        raise download_error(exc, cfg, hf_home) from None
    return DownloadResult(path, time.monotonic() - start, False)


def download_error(exc: Exception, cfg: Config, hf_home: Path) -> Exception:
    """What a hub failure means for the user, and what to do about it."""
    from huggingface_hub.utils import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    m = cfg.model
    flag = f"--profile {cfg.profile} --cluster {cfg.cluster_name}" + (" --dummy-weights" if cfg.dummy_weights else "")
    page = f"{HUB}/{m['repo']}"
    if isinstance(exc, GatedRepoError):
        return SparkopsError(f"{m['repo']} is gated and this token has no access to it (yet)",
                             step="download", details=[_first_line(exc)],
                             fix=f"open {page}, accept the license with the account the token belongs "
                                 f"to, wait for the grant, then `inv download {flag}` again")
    if isinstance(exc, RevisionNotFoundError):
        return SparkopsError(f"{m['repo']} has no revision {m.get('revision')!r}", step="download",
                             fix=f"fix model.revision in the profile (see {page}/commits/main)")
    if isinstance(exc, RepositoryNotFoundError):
        return SparkopsError(f"{m['repo']} was not found, or needs a token this config lacks",
                             step="download", details=[_first_line(exc)],
                             fix=f"check the name at {page}; for a private or gated model store a token "
                                 f"with `inv setup --hf-token-stdin` (or HF_TOKEN)")
    if isinstance(exc, LocalEntryNotFoundError) or _is_network(exc):
        cause = exc.__cause__ or exc.__context__
        return SparkopsError(
            f"cannot reach the Hugging Face hub, and {m['repo']} is not in {hf_home / 'hub'}",
            step="download", details=[f"{type(cause or exc).__name__}: {_first_line(cause or exc)}"],
            fix=f"on a machine with internet: `{hf_cli(cfg.doc)} --local-dir DIR`, bring DIR here, then "
                f"`inv download {flag} --local-dir DIR` imports it; or pre-seed the cache: copy "
                f"that machine's ~/.cache/huggingface/hub/{repo_dir(hf_home, m['repo']).name} into {hf_home / 'hub'}")
    if isinstance(exc, OSError):
        return SparkopsError(f"download failed: {exc}", step="download",
                             fix=f"check free space and permissions of {hf_home}; `inv download {flag}` "
                                 "resumes where it stopped")
    return SparkopsError(f"download of {m['repo']} failed: {type(exc).__name__}: {_first_line(exc)}",
                         step="download", fix=f"`inv download {flag}` resumes where it stopped")


def hf_cli(doc: dict) -> str:
    """The `hf download` command that fetches what this profile takes (with random weights: only
    its config and tokenizer files)."""
    m = doc["model"]
    allow, ignore = download_patterns(doc)
    argv = ["hf", "download", m["repo"]] + (["--revision", m["revision"]] if m.get("revision") else [])
    argv += [a for p in allow or () for a in ("--include", p)]
    argv += [a for p in ignore or () for a in ("--exclude", p)]
    return shlex.join(argv)


def _is_network(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(names & {"ConnectError", "ConnectTimeout", "ConnectionError", "ReadTimeout", "OfflineModeIsEnabled"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
