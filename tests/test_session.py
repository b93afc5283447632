"""The cluster session against real connections: this machine as the head (the probe runs for
real) and two workers whose SSH port refuses, as a node that is off does."""
from __future__ import annotations

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.config import load_config
from sparkops.facts.session import cluster_session


@pytest.fixture
def cfg(isolated_override, tmp_path):
    isolated_override.write_text(
        '[clusters.local]\n'
        'nodes = [{name = "head", host = "local"},\n'
        '         {name = "w1", host = "127.0.0.1", port = 1},\n'
        '         {name = "w2", host = "127.0.0.1", port = 2}]\n'
        f'[clusters.local.paths]\nhf_home = "{tmp_path / "hf"}"\n')
    return load_config("smoke", "local", environ={})


def test_the_session_reads_every_node_at_once_and_names_every_unreachable_one(cfg):
    with cluster_session(cfg) as session:
        assert list(session.facts) == ["head"] and session.head_reachable()
        assert session.facts["head"].source == "live" and session.facts["head"].hostname
        assert set(session.unreachable) == {"w1", "w2"}
        assert session.reachable.names() == ["head"] and session.head.name == "head"
        session.require(["head"])  # the head alone is fine
        with pytest.raises(SparkopsError) as caught:
            session.require()
    text = caught.value.render()
    assert "failed on 2 nodes: w1, w2" in text
    assert "[w1] cannot reach 127.0.0.1:1" in text and "[w2] cannot reach 127.0.0.1:2" in text


def test_a_session_over_some_nodes_gathers_lazily(cfg):
    with cluster_session(cfg, ["head", "w2"], gather=False) as session:
        assert session.group.names() == ["head", "w2"] and session.facts == {}
        assert list(session.gather(["head"])) == ["head"] and not session.unreachable
        session.gather()
        assert list(session.unreachable) == ["w2"]
        session.gather(["head"])  # re-reading one node keeps what is known of the others
        assert list(session.facts) == ["head"] and list(session.unreachable) == ["w2"]
