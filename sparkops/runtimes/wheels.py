"""A folder of wheels for `inv install-vllm --wheels DIR`, and which torch its vLLM needs.

Pure, on the controller: the folder is read once (names, sizes, sha256, the vLLM wheel's own
METADATA), and for each node the torch to use is chosen from what the node's Python has (its
probe, sparkops.node_scripts.vllm_wheels): the node's own when it meets the `Requires-Dist:
torch...` of vLLM's wheel (evaluated with the node's marker variables, as pip on the node
would), else a torch wheel of the folder that does, else a refusal naming both versions and
the ways out. Nothing here touches a node.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from sparkops.base.errors import SparkopsError

STEP = "install-vllm"
HOW_TO_FOLDER = "docs/runtimes.md: Installing vLLM offline from a folder of wheels"


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # canonical distribution name (PEP 503)
    version: str
    size: int
    sha256: str


@dataclass(frozen=True)
class WheelFolder:
    path: Path
    wheels: tuple[Wheel, ...]
    vllm: Wheel
    requires: tuple[str, ...]  # the vLLM wheel's Requires-Dist lines
    digest: str  # over every wheel's name and sha256: the node checks its copy against it

    @property
    def size(self) -> int:
        return sum(w.size for w in self.wheels)

    def named(self, name: str) -> list[Wheel]:
        return [w for w in self.wheels if w.name == name]


@dataclass(frozen=True)
class TorchChoice:
    reuse: bool  # the venv sees the node's own torch (a .pth), nothing installed for it
    version: str | None  # the torch the venv will have (None: vLLM names none, and the node has none)
    line: str  # what was decided, for people


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def metadata(path: Path) -> dict[str, list[str]]:
    """A wheel's METADATA headers (every value of each, in order), read from the zip."""
    name, version = parse_wheel_filename(path.name)[:2]
    try:
        with zipfile.ZipFile(path) as zf:
            found = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(found) != 1:
                raise SparkopsError(f"{path.name} holds {len(found)} .dist-info/METADATA files, not one: "
                                    "not a wheel pip can install", step=STEP)
            text = zf.read(found[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError) as exc:
        raise SparkopsError(f"cannot read {path}: {exc}", step=STEP,
                            fix="download it again (an interrupted download leaves a broken zip)") from None
    message = HeaderParser().parsestr(text)
    return {key: [str(v) for v in message.get_all(key, [])] for key in set(message.keys())}


def _metadata_version(path: Path, from_name: Version) -> str:
    """The Version of a wheel's METADATA, which must be the one its file name says."""
    inside = metadata(path).get("Version", [""])[0]
    try:
        if Version(inside) == from_name:
            return inside
    except InvalidVersion:
        pass
    raise SparkopsError(f"{path.name} says version {inside!r} in its METADATA: a renamed or broken file", step=STEP,
                        fix="download it again")


def read_folder(path: Path) -> WheelFolder:
    """The folder's wheels and its one vLLM wheel; a SparkopsError when it is not such a folder."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise SparkopsError(f"--wheels {path} is not a directory", step=STEP,
                            fix=f"make the folder first ({HOW_TO_FOLDER})")
    wheels = []
    for file in sorted(path.glob("*.whl")):
        try:
            name, version = parse_wheel_filename(file.name)[:2]
        except (InvalidWheelFilename, InvalidVersion) as exc:
            raise SparkopsError(f"{file.name} is not a wheel's file name: {exc}", step=STEP,
                                fix=f"remove it from {path}") from None
        # vLLM's and torch's version as their METADATA spells it: what the venv will report
        spelled = _metadata_version(file, version) if name in ("vllm", "torch") else str(version)
        wheels.append(Wheel(file, str(name), spelled, file.stat().st_size, _sha256(file)))
    vllms = [w for w in wheels if w.name == "vllm"]
    if len(vllms) != 1:
        held = f"{len(vllms)} vLLM wheels ({', '.join(w.path.name for w in vllms)})" if vllms else "no vLLM wheel"
        raise SparkopsError(f"{path} holds {held} among {len(wheels)} wheel(s): it needs exactly one", step=STEP,
                            fix=f"keep the one vllm-*.whl to install in {path} ({HOW_TO_FOLDER})")
    meta = metadata(vllms[0].path)
    outer = hashlib.sha256()
    for w in wheels:
        outer.update(f"{w.path.name} {w.sha256}\n".encode())
    return WheelFolder(path, tuple(wheels), vllms[0], tuple(meta.get("Requires-Dist", [])), outer.hexdigest())


def torch_requirement(requires: tuple[str, ...] | list[str], marker_env: dict[str, str]) -> SpecifierSet | None:
    """What `Requires-Dist: torch...` asks of torch on a node with these marker variables (no
    extras); None when no line applies. Several applying lines all hold."""
    spec: SpecifierSet | None = None
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue  # pip would reject the wheel; not ours to judge here
        if canonicalize_name(req.name) != "torch":
            continue
        if req.marker is not None and not req.marker.evaluate({**marker_env, "extra": ""}):
            continue
        spec = req.specifier if spec is None else spec & req.specifier
    return spec


def meets(spec: SpecifierSet, version: str | None) -> bool:
    """Whether an installed torch meets the spec, as pip judges an installed distribution
    (pre-releases allowed; a local label such as +cu130 ignored by ==2.11.0)."""
    if version is None:
        return False
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def choose_torch(folder: WheelFolder, probe: dict, node: str, python: str, cluster: str) -> TorchChoice:
    """The node's torch when it meets vLLM's requirement, else a torch wheel of the folder that
    does; otherwise a SparkopsError naming both versions and what to do."""
    vllm = f"vllm {folder.vllm.version}"
    have = (probe.get("torch") or {}).get("version")
    spec = torch_requirement(folder.requires, probe["marker_env"])
    if spec is None:
        line = f"{vllm} names no torch requirement; this node has {'torch ' + have if have else 'no torch'}"
        return TorchChoice(bool(have), have, line + (": reused" if have else ""))
    needs = f"{vllm} needs torch{spec}"
    if meets(spec, have):
        spare = [w.path.name for w in folder.named("torch")]
        note = f" (the folder's {', '.join(spare)} not needed)" if spare else ""
        return TorchChoice(True, have, f"{needs}; this node has torch {have}: reused{note}")
    fitting = [w for w in folder.named("torch") if meets(spec, w.version)]
    node_has = f"torch {have}" if have else "no torch"
    if fitting:
        return TorchChoice(False, fitting[-1].version,
                           f"{needs}; this node has {node_has}: installing torch {fitting[-1].version} from the folder")
    pinned = f"a vLLM wheel whose METADATA pins torch=={have.split('+')[0]}" if have else "a torch installed there"
    raise SparkopsError(
        f"{needs}; {probe.get('python', python)} on this node has {node_has}, and the folder holds no torch wheel "
        f"that fits: nothing was installed", host=node, step=STEP,
        details=[f"{folder.path} holds {len(folder.wheels)} wheel(s); vLLM's requirement read from "
                 f"{folder.vllm.path.name}'s METADATA"],
        fix=f"put {pinned} in {folder.path} instead (docs/runtimes.md: which vLLM pins which torch), "
            f"or add torch{spec} and its dependencies to it "
            f"(`pip download 'torch{spec}' --only-binary=:all: -d {folder.path}`), "
            f"or name a Python that has it: `inv install-vllm --cluster {cluster} --wheels {folder.path} "
            f"--python /path/to/python3`")


def identity(folder: WheelFolder, torch: TorchChoice, probe: dict, no_deps: bool) -> dict:
    """What an install is, recorded in the venv's marker: the same identity again means the
    same install, which a second run leaves alone."""
    return {"vllm": folder.vllm.version, "wheels_digest": folder.digest, "torch": torch.version,
            "reuse_torch": torch.reuse, "no_deps": no_deps, "python": probe["python"]}


def venv_action(probe: dict, want: dict, venv: str, node: str, cluster: str) -> str:
    """'skip' (this very install is there), 'install' (nothing there) or 'replace' (an earlier
    install by sparkops); a venv sparkops did not make is refused, never replaced."""
    state = probe["venv"]
    kind = state["state"]
    if kind == "wheels":
        seen = state.get("versions") or {}
        same = (state.get("marker", {}).get("identity") == want
                and (seen.get("vllm") or {}).get("version") == want["vllm"]
                and (seen.get("torch") or {}).get("version") == want["torch"])
        return "skip" if same else "replace"
    if kind == "cpu":
        return "replace"
    if kind == "foreign":
        raise SparkopsError(f"{venv} exists and was not made by sparkops: nothing was installed", host=node,
                            step=STEP, fix=f"move it away, or install elsewhere: `inv install-vllm --cluster {cluster} "
                                           f"--wheels DIR --set cluster.venv=\"/other/path\"`")
    return "install"
