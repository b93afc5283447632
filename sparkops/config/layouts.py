"""Layouts: how one model is placed on the cluster's nodes. Pure.

  tp        one model over every node (tensor parallel across them): the most memory, the
            fastest single request, each step crossing the cable;
  dp        one replica per node (vLLM data parallel): each request stays inside a node, the
            replicas share the load (a mixture of experts keeps them in step over the cable);
  replicas  one independent vLLM server per node behind vLLM's router on the head: nothing
            but the requests crosses the cable;
  solo      one replica on the head alone: the baseline, and what a model gets on one Spark.

A layout is a few `serving.*` settings over a profile; `bench-all --layouts` benches each,
and the report finds where one overtakes another.
"""
from __future__ import annotations

from sparkops.base.errors import SparkopsError
from sparkops.config.memfit import nodes_needed

LAYOUTS = ("tp", "dp", "replicas", "solo")


def layout_sets(layout: str, nodes: int, gpus_per_node: int) -> list[str]:
    """The --set overrides that put a profile in `layout` on a cluster of `nodes` nodes."""
    if layout == "tp":
        tp, dp = nodes * gpus_per_node, 1
    elif layout == "dp":
        tp, dp = gpus_per_node, nodes
    elif layout == "replicas":
        return [f"serving.tensor_parallel={gpus_per_node}", "serving.pipeline_parallel=1",
                f"serving.data_parallel={nodes}", 'distributed.backend="replicas"']
    elif layout == "solo":
        tp, dp = gpus_per_node, 1
    else:
        raise SparkopsError(f"unknown layout {layout!r}", fix=f"use any of {', '.join(LAYOUTS)}")
    # dp is vLLM's own launcher's (mp); tp and solo keep the profile's backend (mp or ray).
    backend = ['distributed.backend="mp"'] if layout == "dp" else []
    return [f"serving.tensor_parallel={tp}", "serving.pipeline_parallel=1", f"serving.data_parallel={dp}", *backend]


def needs(layout: str, nodes: int, gpus_per_node: int) -> str | None:
    """Why `layout` has no place on a cluster of this shape (None: it has one): replicas needs
    two (one per node, TP = the node's GPUs)."""
    if layout == "replicas" and nodes < 2:
        return "needs two nodes or more (one replica per node, behind the router)"
    return None


def parse_layouts(text: str) -> list[str]:
    """`tp,dp,replicas,solo` -> the list, each checked, in the given order, repeats dropped."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in LAYOUTS]
    if bad or not names:
        raise SparkopsError(f"--layouts: unknown layout(s) {', '.join(bad) or '(none given)'}",
                            fix=f"a comma-separated list of {', '.join(LAYOUTS)}")
    return list(dict.fromkeys(names))


def layout_of(doc: dict) -> str:
    """The layout a configuration is in (by its serving settings and the nodes it needs)."""
    serving = doc["serving"]
    if doc["distributed"]["backend"] == "replicas":
        return "replicas"
    if serving.get("data_parallel", 1) > 1:
        return "dp"
    return "solo" if nodes_needed(doc) <= 1 else ("tp" if serving["pipeline_parallel"] == 1 else "pp")


def describe(doc: dict) -> str:
    """The layout in words, for tables: 'TP=2', 'DP=2', '2 replicas + router', 'TP=1, one node'."""
    s = doc["serving"]
    return label(layout_of(doc), s["tensor_parallel"], s["pipeline_parallel"], s.get("data_parallel", 1))


def label(layout: str | None, tp: int | None, pp: int | None, dp: int | None) -> str:
    """'TP=2', 'TP=2 x PP=2', 'DP=2' (TP=1 each, unless said), '2 replicas + router',
    'TP=1, one node'; '' unknown."""
    if layout == "replicas":
        return f"{dp} replicas + router" + (f" x TP={tp}" if tp and tp > 1 else "")
    if layout == "dp":
        return f"DP={dp}" + (f" x TP={tp}" if tp and tp > 1 else "")
    if layout == "solo":
        return f"TP={tp}, one node"
    if layout in ("tp", "pp"):
        return f"TP={tp}" + (f" x PP={pp}" if pp and pp > 1 else "")
    return ""
