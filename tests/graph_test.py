"""The graph each run writes for TensorBoard's Graphs tab, read back with TensorBoard's own loader."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sweeper import train
from sweeper.record.writer import GRAPH_SUFFIX
from sweeper.train import fused

BATCH, HIDDEN = 100, 32  # FAST's batch_size and hidden


def graph_of(workdir: Path) -> dict[str, tuple[str, list[str], list[list[int]]]]:
    """The run's graph as TensorBoard loads it: node name -> (op, inputs, output shapes)."""
    events = EventAccumulator(str(workdir))
    events.Reload()
    return {
        node.name: (
            node.op,
            list(node.input),
            [[d.size for d in shape.dim] for shape in node.attr["_output_shapes"].list.shape],
        )
        for node in events.Graph().node
    }


@pytest.fixture(scope="module")
def run_graph(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("graph") / "run"
    train.train_and_evaluate(compose_config(*FAST, "max_steps=20"), workdir)
    return workdir, graph_of(workdir)


def test_a_run_writes_its_train_step_as_the_articles_layers_loss_and_optimizer(run_graph):
    _, graph = run_graph
    scopes = {name.rsplit("/", 1)[0] for name in graph if "/" in name}
    for scope in ("layer1", "layer2", "loss/cross_entropy", "loss/l2", "optimizer", "batch", "accuracy"):
        assert scope in scopes, scope
    assert {"gradients/layer1", "gradients/layer2", "gradients/loss/l2"} <= scopes  # the backward pass
    assert graph["layer1/kernel"][::2] == ("Parameter", [[HIDDEN, 3072]])
    assert graph["layer2/kernel"][::2] == ("Parameter", [[10, HIDDEN]])
    # The forward pass with its shapes on the edges: batch x 3072 -> batch x hidden -> batch x 10.
    op, inputs, shapes = graph["layer1/dot_general"]
    assert shapes == [[BATCH, HIDDEN]] and graph[inputs[0]][2] == [[BATCH, 3072]]
    assert graph["layer2/dot_general"][2] == [[BATCH, 10]]
    assert graph["layer2/dot_general"][1][0].startswith("layer1/relu/")
    assert graph["outputs/loss"][2] == [[]] and graph["outputs/loss"][1][0].startswith("loss/")


def test_every_edge_comes_from_a_node_of_the_graph(run_graph):
    _, graph = run_graph
    for name, (_, inputs, _) in graph.items():
        for source in inputs:
            assert source.split(":")[0] in graph, (name, source)


def test_the_graph_is_one_small_file_replaced_when_the_run_resumes(run_graph, tmp_path):
    workdir, graph = run_graph
    (first,) = workdir.glob(f"events.out.tfevents.*{GRAPH_SUFFIX}")
    assert first.stat().st_size < 64_000
    rerun = tmp_path / "run"
    train.train_and_evaluate(compose_config(*FAST, "max_steps=20"), rerun)
    train.train_and_evaluate(compose_config(*FAST, "max_steps=40"), rerun)  # resumes from step 20
    assert len(list(rerun.glob(f"events.out.tfevents.*{GRAPH_SUFFIX}"))) == 1
    assert graph_of(rerun) == graph


def test_each_fused_member_gets_the_graph_of_its_own_width(tmp_path, run_graph):
    workdirs = [tmp_path / "16", tmp_path / "32"]
    fused.train_group([compose_config(*FAST, "max_steps=20", f"hidden={w.name}") for w in workdirs], workdirs)
    assert graph_of(workdirs[0])["layer1/kernel"][2] == [[16, 3072]]
    assert graph_of(workdirs[1]) == run_graph[1]  # the same graph as a single run of that config
