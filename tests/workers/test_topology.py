"""Ring and status block names, routing, stage loading, the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicegate.core.config import ConfigError, NodeConfig, NodeSettings, available_cpus, load_config
from voicegate.core.kinds import session_id
from voicegate.workers.__main__ import main
from voicegate.workers.runtime.process import load_stage_class
from voicegate.workers.runtime.renamed_stages import RENAMED_STAGE_MODULES
from voicegate.workers.runtime.topology import Topology
from voicegate.workers.stages.passthrough import PassThroughStage
from voicegate.workers.stages.stage import StageContext


def test_topology_of_a_two_gateway_node() -> None:
    topology = Topology(NodeConfig(node=NodeSettings(name="n1", gateways=2)))
    names = {(r.producer, r.consumer): r.name for r in topology.rings}
    assert names == {
        ("gw0", "vad"): "vg-n1-gw0-vad",
        ("gw1", "vad"): "vg-n1-gw1-vad",
        ("vad", "stt"): "vg-n1-vad-stt",
        ("stt", "llm"): "vg-n1-stt-llm",
        ("llm", "tts"): "vg-n1-llm-tts",
        ("tts", "gw0"): "vg-n1-tts-gw0",
        ("tts", "gw1"): "vg-n1-tts-gw1",
        ("vad", "gw0"): "vg-n1-vad-gw0",
        ("vad", "gw1"): "vg-n1-vad-gw1",
        ("supervisor", "gw0"): "vg-n1-ctl-gw0",
        ("supervisor", "gw1"): "vg-n1-ctl-gw1",
    }
    assert [r.name for r in topology.inputs("vad")] == ["vg-n1-gw0-vad", "vg-n1-gw1-vad"]
    assert [r.name for r in topology.outputs("tts")] == ["vg-n1-tts-gw0", "vg-n1-tts-gw1"]
    assert [r.name for r in topology.inputs("llm")] == ["vg-n1-stt-llm"]
    assert sorted(r.name for r in topology.rings if r.lossy) == [
        "vg-n1-tts-gw0", "vg-n1-tts-gw1", "vg-n1-vad-gw0", "vg-n1-vad-gw1"
    ]
    assert [r.name for r in topology.events("vad")] == ["vg-n1-vad-gw0", "vg-n1-vad-gw1"]
    assert topology.events("stt") == []
    assert topology.status_block("stt") == "vg-n1-stt.status"
    assert topology.node_block == "vg-n1-node.status"
    route = topology.router("tts")
    assert [route(session_id(g, 9)) for g in (0, 1)] == [0, 1]
    assert topology.router("stt")(session_id(1, 9)) == 0


def test_load_stage_class() -> None:
    passthrough = "voicegate.workers.stages.passthrough"
    assert load_stage_class(f"{passthrough}:PassThroughStage") is PassThroughStage
    # a node configuration written before the layout of issue #14 names the old module
    (old,) = (o for o, n in RENAMED_STAGE_MODULES.items() if n == passthrough)
    assert load_stage_class(f"{old}:PassThroughStage") is PassThroughStage
    with pytest.raises(ImportError, match="'no_such:Stage': cannot import module 'no_such'"):
        load_stage_class("no_such:Stage")
    with pytest.raises(TypeError, match="'Topology' is not a Stage subclass"):
        load_stage_class("voicegate.workers.runtime.topology:Topology")
    with pytest.raises(TypeError, match="'Missing' is not a Stage subclass"):
        load_stage_class("voicegate.workers.runtime.topology:Missing")


def test_pass_through_options_are_checked() -> None:
    config = NodeConfig()
    stage = PassThroughStage(StageContext("llm", config, {"tag": "<llm>"}, (0,), 1))
    assert stage.tag == b"<llm>"
    assert PassThroughStage(StageContext("llm", config, {}, (0,), 1)).tag == b"|llm"
    with pytest.raises(ConfigError, match=r"workers\.llm\.options\.speed"):
        PassThroughStage(StageContext("llm", config, {"speed": 2}, (0,), 1))
    with pytest.raises(ConfigError, match=r"workers\.llm\.options\.tag = 3"):
        PassThroughStage(StageContext("llm", config, {"tag": 3}, (0,), 1))


def test_cli_rejects_a_bad_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[health]\nmax_restarts = -1\n")
    assert main(["--config", str(path)]) == 2
    assert "health.max_restarts = -1" in capsys.readouterr().err


def test_rings_whose_ends_share_one_cpu_do_not_spin(tmp_path: Path) -> None:
    cpus = sorted(available_cpus())
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    a, b = cpus[:2]
    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\nname = "spin1"\n[rings]\nspin_us = 40\n[gateway]\ncpus = [{a}]\n'
        f"[workers.vad]\ncpus = [{a}]\n[workers.stt]\ncpus = [{b}]\n"
        f"[workers.llm]\ncpus = [{a}, {b}]\n[workers.tts]\ncpus = [{a}, {b}]\n"
    )
    topology = Topology(load_config(path, env={}))
    spins = {"-".join(spec.name.split("-")[-2:]): topology.spin_us(spec) for spec in topology.rings}
    assert spins["gw0-vad"] == 0.0 and spins["vad-gw0"] == 0.0  # both on CPU a
    assert spins["vad-stt"] == 40.0  # across cores
    assert spins["llm-tts"] == 40.0  # two CPUs each: the ends may run at once
    assert spins["ctl-gw0"] == 40.0  # the supervisor is not pinned
