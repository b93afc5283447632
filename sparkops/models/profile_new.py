"""`inv profile-new SOURCE`: a profile written from a model's own files, for the user to review.

SOURCE is a folder holding the model's config.json (a download, a copy from another machine),
or a Hugging Face repo id: its files come from the head's Hugging Face cache when they are
there, else from the Hub with the token of the configuration (huggingface_hub; with
HF_HUB_OFFLINE=1 only the cache). Read: config.json, model.safetensors.index.json (the weights'
real size, whatever their quantization), hf_quant_config.json (ModelOpt's NVFP4/FP8). For a repo id, asked
of the Hub when it can be reached: whether the model is gated. Written:
profiles/NAME.toml with the architecture numbers the memory fit needs, the weights' size, the
checkpoint's quantization (vLLM reads it from config.json itself: no flag), serving defaults for
a Spark and every estimate the numbers involve, in comments. The profile is validated before the
command ends; one that does not validate is removed, with the reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import tomlkit

from sparkops.base.errors import ConfigError, SparkopsError
from sparkops.base.names import check_name
from sparkops.base.paths import profiles_dir
from sparkops.models.hf_config import ModelFacts, parse

CONFIG, INDEX, QUANT = "config.json", "model.safetensors.index.json", "hf_quant_config.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# A Spark's default context for a new profile: long enough for most work, short enough that the
# KV cache leaves room for several sequences; the model's own maximum when it is shorter.
DEFAULT_MAX_MODEL_LEN = 32768


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise SparkopsError(f"{path} is not JSON: {exc}", step="profile-new") from None
    if not isinstance(data, dict):
        raise SparkopsError(f"{path} holds no JSON object", step="profile-new")
    return data


def from_folder(folder: Path) -> tuple[dict, dict | None, dict | None, int | None]:
    cfg = _json(folder / CONFIG)
    if cfg is None:
        raise SparkopsError(f"{folder} has no {CONFIG}", step="profile-new",
                            fix="give the folder the model's files are in (the one holding config.json)")
    sizes = [p.stat().st_size for p in folder.glob("*.safetensors")]
    return cfg, _json(folder / INDEX), _json(folder / QUANT), sum(sizes) or None


def from_hub(repo: str, token: str | None) -> tuple[dict, dict | None, dict | None, int | None]:
    """The files from the local Hugging Face cache, else the Hub (HF_HUB_OFFLINE=1: cache only)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    def fetch(name: str, required: bool) -> dict | None:
        # LocalEntryNotFoundError (offline, not cached) is an EntryNotFoundError: asked first.
        try:
            return _json(Path(hf_hub_download(repo, name, token=token)))
        except LocalEntryNotFoundError:
            if required:
                raise SparkopsError(f"{repo}'s {name} is not in the Hugging Face cache and the Hub cannot be "
                                    "reached", step="profile-new",
                                    fix=f"give a folder holding its {CONFIG} (`inv profile-new PATH --repo {repo}`)"
                                    ) from None
            return None
        except EntryNotFoundError:
            if required:
                raise SparkopsError(f"{repo} has no {name}", step="profile-new") from None
            return None
        except RepositoryNotFoundError:
            raise SparkopsError(f"the Hub has no repo {repo!r} (or it is gated and the token may not read it)",
                                step="profile-new",
                                fix="check the name; for a gated model accept its license and "
                                    "`inv setup --hf-token-stdin`") from None
    return fetch(CONFIG, True) or {}, fetch(INDEX, False), fetch(QUANT, False), None


def gated_on_hub(repo: str, token: str | None) -> bool | None:
    """Whether the Hub asks to accept a license before the files download (its model info's
    `gated`: false, "auto" or "manual"); None when it cannot be asked (offline, unreachable, no
    such repo for this token). Never an error: the files, not this answer, make the profile."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        info = HfApi(token=token).model_info(repo, timeout=10)
    except Exception:  # noqa: BLE001 - any failure to ask leaves the answer unknown, said so
        return None
    return bool(info.gated)


def _noted(value, comment: str):
    item = tomlkit.item(value)
    item.comment(comment)
    return item


def profile_document(repo: str, facts: ModelFacts, source: str, gated: bool | None = None) -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"Written by `inv profile-new {source}` from the model's own files: review it."))
    for note in facts.notes:
        doc.add(tomlkit.comment(f"estimate: {note}"))
    doc.add(tomlkit.nl())
    kind = "MoE" if facts.arch.get("moe") else "dense"
    attention = "MLA" if facts.arch.get("attention") == "mla" else "standard attention"
    profile = tomlkit.table()
    profile["description"] = (f"{repo}: {facts.architecture}, {kind}, {attention}"
                              + (f", {facts.quantization} weights" if facts.quantization else "")
                              + (f", {facts.weights_gb:g} GB" if facts.weights_gb else ""))
    doc["profile"] = profile
    model = tomlkit.table()
    model["repo"] = repo
    if gated is None:
        model["gated"] = _noted(False, "not known (the Hub was not asked, or did not answer): "
                                       "true if it asks to accept a license")
    else:
        model["gated"] = _noted(gated, "as the Hub says" + (": accept the license on its page" if gated else ""))
    if facts.weights_gb:
        model["download_gb"] = facts.weights_gb
        model["weights_gb"] = _noted(facts.weights_gb, "the safetensors' real size: quantized weights as stored")
    model["notes"] = (f"{CONFIG}: {facts.architecture} (model_type {facts.model_type}), dtype {facts.dtype}"
                      + (f", quantization {facts.quantization} (vLLM reads it from {CONFIG})"
                         if facts.quantization else ""))
    arch = tomlkit.table()
    for key, value in facts.arch.items():
        arch[key] = value
    model["arch"] = arch
    doc["model"] = model
    serving = tomlkit.table()
    positions = facts.arch.get("max_position_embeddings") or DEFAULT_MAX_MODEL_LEN
    serving["max_model_len"] = _noted(min(positions, DEFAULT_MAX_MODEL_LEN),
                                      f"the model takes up to {positions}; raise it if the memory fit allows")
    if facts.arch.get("moe"):
        serving["expert_parallel"] = True
    if facts.kv_cache_fp8:
        serving["kv_cache_dtype"] = _noted("fp8", "the checkpoint ships FP8 KV-cache scales: half the cache of bf16")
    doc["serving"] = serving
    return doc


def profile_new(root: Path, source: str, *, name: str | None = None, repo: str | None = None,
                token: str | None = None, force: bool = False, validate=None) -> Path:
    """Write profiles/NAME.toml from SOURCE (a folder, or a repo id); `validate(name)` loads it
    (load_config) and raises ConfigError when it cannot run: then the file is removed."""
    folder = Path(source).expanduser()
    gated = None
    if folder.is_dir():
        cfg, index, quant, files = from_folder(folder)
        named = cfg.get("_name_or_path")
        repo = repo or (named if isinstance(named, str) and REPO_ID.match(named) else None)
        if not repo:
            raise SparkopsError(f"{folder}'s {CONFIG} does not say which Hugging Face repo it is",
                                step="profile-new", fix=f"`inv profile-new {source} --repo ORG/NAME`")
    elif REPO_ID.match(source):
        repo = repo or source
        cfg, index, quant, files = from_hub(source, token)
        gated = gated_on_hub(repo, token)
    else:
        raise SparkopsError(f"{source!r} is neither a folder nor a Hugging Face repo id (ORG/NAME)",
                            step="profile-new")
    if not REPO_ID.match(repo):
        raise SparkopsError(f"--repo {repo!r} is not a Hugging Face repo id (ORG/NAME)", step="profile-new")
    try:
        facts = parse(cfg, index, quant, files)
    except ValueError as exc:
        raise SparkopsError(f"{CONFIG} of {repo}: {exc}", step="profile-new") from None
    name = check_name("profile", name or repo.split("/", 1)[1].lower())
    path = profiles_dir(root) / f"{name}.toml"
    if path.exists() and not force:
        raise SparkopsError(f"{path} exists", step="profile-new",
                            fix=f"`inv profile-new {source} --name OTHER`, or --force to replace it")
    document = profile_document(repo, facts, source, gated)
    write_validated(path, tomlkit.dumps(document), validate)
    return path


def write_validated(path: Path, text: str, validate=None) -> None:
    """Write a profile, then `validate(its name)` (load_config); on ConfigError put back what was
    there (nothing, or the profile --force replaced) and raise: a refused profile loses nothing."""
    previous = path.read_text() if path.exists() else None
    path.write_text(text)
    if validate is None:
        return
    try:
        validate(path.stem)
    except ConfigError:
        if previous is None:
            path.unlink()
        else:
            path.write_text(previous)
        raise
