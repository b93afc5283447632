"""The effective configuration: layers merged in code, validated once, then checked."""
from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from sparkops.base.errors import ConfigError
from sparkops.base.names import check_name
from sparkops.base.paths import local_override_path, project_root
from sparkops.config.catalog import cluster_path, profile_path
from sparkops.config.layers import Layer, cli_layer, env_layer, merge, scoped_override
from sparkops.config.layers import environ as os_environ
from sparkops.config.semantic import Finding, check
from sparkops.config.toml_files import parse_toml, read_toml
from sparkops.config.validate import validate
from sparkops.config.weights import dummy_weights

DEFAULT_CLUSTER = "spark-pair"
MASK = "********"


@dataclass(frozen=True)
class Config:
    profile: str
    cluster_name: str
    doc: dict
    layers: tuple[Layer, ...] = ()
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def cluster(self) -> dict:
        return self.doc["cluster"]

    @property
    def serving(self) -> dict:
        return self.doc["serving"]

    @property
    def model(self) -> dict:
        return self.doc["model"]

    @property
    def secrets(self) -> dict:
        return self.doc.get("secrets", {})

    @property
    def nodes(self) -> list[dict]:
        return self.doc["cluster"]["nodes"]

    @property
    def dummy_weights(self) -> bool:
        """Serves random weights (model.weights = "dummy"): results measure speed only."""
        return dummy_weights(self.doc)

    def with_dummy_weights(self) -> Config:
        """This configuration serving random weights (what `--dummy-weights` would have loaded)."""
        return replace(self, doc={**self.doc, "model": {**self.model, "weights": "dummy"}})

    @property
    def served_model_name(self) -> str:
        return self.serving.get("served_model_name") or self.model["repo"]

    def public(self) -> dict:
        """The document with secrets masked: what plans, logs and results may show."""
        doc = json.loads(json.dumps(self.doc))
        doc["secrets"] = {k: MASK for k, v in doc.get("secrets", {}).items() if v}
        return doc

    def config_hash(self) -> str:
        """Identity of what would be served; secrets count only as present or absent. The
        [bench] section is left out: how a deployment is measured does not change it (a result
        records its own benchmark settings), so a new suite does not make a deployment stale.
        [cluster.sync] neither: how a model is copied does not change what is served. Nor [tune]:
        a search space, or the record of what a tune wrote, serves nothing (the values it wrote
        count where they live, in [serving])."""
        served = {k: v for k, v in self.public().items() if k not in ("bench", "tune")}
        served["cluster"] = {k: v for k, v in served.get("cluster", {}).items() if k != "sync"}
        # Nor where the operation lock lives (cluster.paths.lock): it guards, it serves nothing.
        if "lock" in served["cluster"].get("paths", {}):
            served["cluster"]["paths"] = {k: v for k, v in served["cluster"]["paths"].items() if k != "lock"}
        # Keys added later with a default that serves the same as before they existed count
        # only when set otherwise: upgrading sparkops must not make a running deployment stale.
        for path, same in ADDED_LATER:
            _drop_if(served, path, same)
        # Numbers that only feed the memory estimate serve nothing: correcting a profile's
        # architecture numbers must not make its running deployment stale. (num_layers,
        # num_kv_heads, head_dim, max_position_embeddings and moe are as descriptive, but they
        # counted from the start; dropping them now would make every deployment stale once.)
        model = {k: v for k, v in served["model"].items() if k not in ("arch", "draft_weights_gb")}
        arch = {k: v for k, v in served["model"].get("arch", {}).items() if k not in ESTIMATE_ONLY_ARCH}
        served["model"] = model | ({"arch": arch} if arch else {})
        text = json.dumps(served, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def overrides(self) -> list[str]:
        """The `--set` and SPARKOPS_* values this config was loaded with, as `key=value` items a
        later load takes again (`up` records them: `inv bench` of that deployment reloads its
        profile with them, not as the profile alone, which may not even run here). Secrets are
        left out; they come from the caller's own files and environment."""
        out: list[str] = []
        for layer in self.layers:
            if layer.name in ("environment", "command line"):
                out += [f"{key}={json.dumps(value)}" for key, value in _leaves(layer.data)
                        if not key.startswith("secrets.")]
        return out

    def secret_values(self) -> list[str]:
        return [v for v in self.secrets.values() if v]


def _leaves(doc: dict, prefix: str = ""):
    """(dotted key, value) of every non-table value."""
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _drop_if(doc: dict, path: tuple[str, ...], value) -> None:
    """Remove doc[path] when it equals value, and the tables that leaves empty (a table added
    with such keys must not change the hash either). Copies the tables it changes."""
    name, rest = path[0], path[1:]
    if name not in doc:
        return
    if not rest:
        if doc[name] == value:
            del doc[name]
        return
    if isinstance(doc[name], dict):
        doc[name] = dict(doc[name])
        _drop_if(doc[name], rest, value)
        if not doc[name]:
            del doc[name]


# model.arch keys that only the memory estimate reads: see Config.config_hash.
ESTIMATE_ONLY_ARCH = frozenset({"attention", "kv_lora_rank", "qk_rope_head_dim", "sliding_window", "sliding_layers",
                                "linear_layers", "num_experts", "experts_per_token", "mtp_layers"})

# (key path, default): see Config.config_hash.
ADDED_LATER = ((("serving", "data_parallel"), 1), (("cluster", "docker", "run_as"), "user"),
               (("cluster", "api", "listen"), "all"), (("cluster", "api", "open"), False),
               (("model", "weights"), "real"),
               # the replicas layout (distributed.backend = "replicas"), which counts itself
               (("router", "policy"), "power_of_two"), (("router", "allow_unauthenticated_admin"), False),
               (("router", "health_check_interval_s"), 5), (("cluster", "ports", "replicas"), 8100),
               (("cluster", "ports", "router_metrics"), 8099),
               # stacks (several models at once): where LiteLLM's proxy lives
               (("cluster", "litellm_venv"), "~/.local/share/sparkops/litellm-venv"),
               (("cluster", "docker", "litellm_venv"), "/opt/litellm"))


def defaults_layer() -> Layer:
    text = resources.files(__package__).joinpath("defaults.toml").read_text()
    return Layer("built-in defaults", parse_toml(text, "sparkops/config/defaults.toml"))


def chosen_cluster(cluster: str | None = None, *, root: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> str:
    """The cluster a verb acts on: --cluster, else $SPARKOPS_CLUSTER, else the local override
    file's default_cluster, else spark-pair (what load_config picks)."""
    root = root or project_root()
    environ = os_environ() if environ is None else environ
    path = local_override_path(root)
    default = read_toml(path).get("default_cluster") if path.is_file() else None
    return check_name("cluster", cluster or environ.get("SPARKOPS_CLUSTER") or default or DEFAULT_CLUSTER)


def load_config(profile: str, cluster: str | None = None, *, root: Path | None = None,
                sets: Sequence[str] = (), environ: Mapping[str, str] | None = None,
                node_memory_gib: float | None = None, serving: bool = True, facts_follow: bool = False) -> Config:
    """The effective configuration. `serving=False` (download, sync) turns the findings that
    only stop a model from serving on this cluster (memory, node count) into warnings.
    `node_memory_gib`: what one node offers vLLM, read from its facts (else the static
    cluster.node_memory_gib). `facts_follow`: the verb reads the nodes' facts and judges the
    memory fit from them before it serves (up, plan, check --profile), so on a discrete GPU a
    verdict from the static figure only warns."""
    root = root or project_root()
    environ = os_environ() if environ is None else environ
    check_name("profile", profile)
    override_path = local_override_path(root)
    override = read_toml(override_path) if override_path.is_file() else {}
    cluster = cluster or environ.get("SPARKOPS_CLUSTER") or override.get("default_cluster") or DEFAULT_CLUSTER
    override.pop("default_cluster", None)
    check_name("cluster", cluster)

    cluster_file = cluster_path(root, cluster)
    profile_file = profile_path(root, profile)
    layers = [
        defaults_layer(),
        Layer(str(cluster_file), read_toml(cluster_file)),
        Layer(str(profile_file), read_toml(profile_file)),
    ]
    if override:
        layers.append(Layer(str(override_path), scoped_override(override, profile, cluster)))
    layers += [env_layer(environ), cli_layer(list(sets))]
    doc = merge(layers)
    doc.setdefault("profile", {})["name"] = profile
    doc.setdefault("cluster", {})["name"] = cluster
    validate(doc, layers)

    findings = check(doc, node_memory_gib=node_memory_gib)
    if not serving:
        findings = [replace(f, level="warn") if f.serving_only else f for f in findings]
    if facts_follow:
        findings = [replace(f, level="warn", message=f"{f.message} (judged from cluster.node_memory_gib "
                            f"{doc['cluster']['node_memory_gib']:g} GiB: the GPU's own memory, from nvidia-smi, "
                            "decides once the node is asked)") if f.facts_decide else f for f in findings]
    findings += _override_permissions(override_path, override)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise ConfigError(
            f"profile {profile!r} on cluster {cluster!r} cannot run",
            details=[line for f in errors for line in f.render().splitlines()],
        )
    return Config(profile, cluster, doc, tuple(layers), tuple(findings))


def _override_permissions(path: Path, override: dict) -> list[Finding]:
    if not override.get("secrets") or not path.is_file():
        return []
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [Finding("warn", str(path), "holds secrets but other users can read it",
                        f"chmod 600 {path}")]
    return []
