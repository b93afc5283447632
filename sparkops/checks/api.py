"""Who can reach the OpenAI API that `up` serves (pure, from the config): on every interface
of the head only with an API key, unless the user opened it on purpose (cluster.api.open); the
replicas layout's router only on loopback, unless the user accepts its open admin routes."""
from __future__ import annotations

from sparkops.checks.result import FAIL, OK, WARN, Check
from sparkops.config import Config
from sparkops.remote.connection import LOCAL_HOSTS


def checks(cfg: Config) -> list[Check]:
    return _api(cfg) + _router(cfg)


def _router(cfg: Config) -> list[Check]:
    """Layout replicas: vllm-router (0.1.17) answers /add_worker and /remove_worker without the
    API key (measured: 200 without it, while /v1/models answers 401). On every interface, anyone
    who can reach the head could add a server of theirs, which then gets users' prompts and the
    API key the router sends on. So only on loopback, unless the user accepts that."""
    if cfg.doc["distributed"]["backend"] != "replicas" or cfg.cluster.get("api", {}).get("listen") == "loopback":
        return []
    head = cfg.nodes[0]
    where = f"port {cfg.cluster['ports']['api']} of {head['name']}"
    if cfg.doc["router"].get("allow_unauthenticated_admin"):
        return [Check("api.router", "deploy", head["name"], WARN,
                      f"the router on every interface ({where}) answers /add_worker and /remove_worker "
                      "without the API key (router.allow_unauthenticated_admin = true): anyone who can reach "
                      "the head can change where requests go", {"listen": "all", "admin": "open"},
                      "keep the head on a network you trust, or --set cluster.api.listen=\"loopback\"")]
    return [Check("api.router", "deploy", head["name"], FAIL,
                  f"layout replicas would put vLLM's router on every interface ({where}), and vllm-router "
                  "answers /add_worker and /remove_worker without the API key: anyone who can reach the head "
                  "could add a server that gets the prompts and the key", {"listen": "all", "admin": "open"},
                  "serve it to the head only (--set cluster.api.listen=\"loopback\"; other machines through "
                  "`ssh -L 8000:127.0.0.1:8000 HEAD`), or on a network you trust "
                  "--set router.allow_unauthenticated_admin=true")]


def _api(cfg: Config) -> list[Check]:
    api, head = cfg.cluster.get("api", {}), cfg.nodes[0]
    where = f"port {cfg.cluster['ports']['api']} of {head['name']}"
    keyed = bool(cfg.secrets.get("api_key"))
    flag = f"--cluster {cfg.cluster_name}"
    if api.get("listen") == "loopback":
        if head["host"] not in LOCAL_HOSTS:
            return [Check("api.access", "deploy", head["name"], FAIL,
                          f"the API would listen on loopback only, on {head['name']} ({head['host']}), "
                          "which sparkops does not run on: it could not reach it",
                          {"listen": "loopback", "head": head["host"]},
                          "run sparkops on the head (its node `host = \"local\"`), or "
                          "--set cluster.api.listen=\"all\" with an API key (`inv api-key --new`)")]
        return [Check("api.access", "deploy", head["name"], OK,
                      f"API on loopback only ({where})" + (", API key required" if keyed else ""),
                      {"listen": "loopback", "key": keyed})]
    if keyed:
        return [Check("api.access", "deploy", head["name"], OK,
                      f"API on every interface ({where}), API key required", {"listen": "all", "key": True})]
    if api.get("open"):
        return [Check("api.access", "deploy", head["name"], WARN,
                      f"the API on every interface ({where}) needs no key (cluster.api.open = true): "
                      "anyone who can reach the head can use the model",
                      {"listen": "all", "key": False, "open": True},
                      f"`inv api-key --new {flag}` makes one (then `inv up` again), and drop cluster.api.open")]
    return [Check("api.access", "deploy", head["name"], FAIL,
                  f"no API key: the API on every interface ({where}) would be open to anyone who can "
                  "reach the head", {"listen": "all", "key": False, "open": False},
                  f"`inv api-key --new {flag}` writes one to sparkops.local.toml; or serve it to the head only "
                  f"(--set cluster.api.listen=\"loopback\"), or open on purpose (--set cluster.api.open=true)")]
