"""A run's training step as a TensorBoard graph: what the Graphs tab shows.

The graph is read off the jaxpr of one run's `train_step.gradient_step`, traced on abstract shapes
(nothing is computed or compiled): one node per JAX primitive, named by the `jax.named_scope`s of the
model (the article's MLP: `layer1`, `layer2`; a module of yours: its own) and sweeper.task.train_step
(`loss/cross_entropy`, `loss/l2`, `optimizer`, ...), the backward pass under `gradients/`, and each
edge labelled with its shape. Calls to jitted helpers (relu, logsumexp, ...) are opened up into a scope
of their own name.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core
from omegaconf import OmegaConf

from sweeper.record.writer import AttrValue, GraphDef, NodeDef, TensorShapeProto
from sweeper.task import data, models, train_step

# Primitives that call another jaxpr with the same inputs and outputs: shown opened up, not as one node.
CALLS = (
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "remat",
    "checkpoint",
)
# A name stack entry such as `transpose(jvp(loss))`: the transformations JAX applied around a scope.
_WRAPPED = re.compile(r"^(\w+)\((.*)\)$")


def run_graph(cfg: dict[str, Any], info: data.Info) -> GraphDef:
    """The graph of one training step of the run `cfg` (a plain config dict) on the data `info` describes."""
    optimizer = json.dumps(cfg["optimizer"], sort_keys=True)
    preprocess = cfg["data"].get("preprocess", "center")
    spec = models.spec_of(cfg["model"], info, preprocess)
    return _traced(spec, int(cfg["batch_size"]), info, preprocess, optimizer)


@functools.lru_cache(maxsize=16)  # a fused program's members share their width's graph
def _traced(spec: models.Spec, batch_size: int, info: data.Info, preprocess: str, optimizer: str) -> GraphDef:
    model = models.abstract(spec)
    opt_cfg = OmegaConf.create(json.loads(optimizer))
    make_optimizer = train_step.optimizer_factory(opt_cfg)
    opt_state = jax.eval_shape(lambda s: train_step.init_optimizer(opt_cfg, s), model.state)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    statistic = jax.ShapeDtypeStruct(info.input_shape, jnp.float32)
    train = train_step.DeviceData(
        images=jax.ShapeDtypeStruct((info.num_train, *info.input_shape), jnp.dtype(info.dtype)),
        labels=jax.ShapeDtypeStruct((info.num_train,), jnp.int32),
        mean_image=None if preprocess == "none" else statistic,
        scale=statistic if preprocess == "standardize" else None,
    )
    args = {
        "params": model.state,
        "opt_state": opt_state,
        "alive": jax.ShapeDtypeStruct((), jnp.bool_),
        "hyper": train_step.Hyper(
            lr=scalar,
            reg=scalar,
            optimizer={k: scalar for k in train_step.dynamic_keys(opt_cfg)},
            unit_mask=None,
        ),
        "batch_indices": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
        "train": train,
    }
    step = functools.partial(train_step.gradient_step, model.graphdef, model.padding, make_optimizer)
    closed, out_shape = jax.make_jaxpr(step, return_shape=True)(*args.values())
    outputs = ("params", "opt_state", "alive", "loss", "accuracy")  # what gradient_step returns
    return to_graph_def(
        closed, _names(args, "inputs"), _names(dict(zip(outputs, out_shape, strict=True)), "outputs")
    )


def _names(tree: dict[str, Any], role: str) -> list[str]:
    """Node names of the step's inputs or outputs (`role`), in the jaxpr's order: parameters inside their
    layer's scope (as TensorFlow shows variables), optimizer state under `optimizer/state`, the rest
    under `role` (inputs/lr, outputs/loss, ...); outputs of parameters go under `outputs/params`."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tuple(tree.values()))[0]:
        keys = _keys(path)
        top, rest = list(tree)[int(keys[0])], keys[1:]
        if top == "params" and role == "inputs":
            names.append("/".join(rest))
        elif top == "opt_state":
            names.append("/".join(["optimizer", "state" if role == "inputs" else "new_state", *rest]))
        elif top == "hyper":
            names.append("/".join([role, *rest]))
        else:
            names.append("/".join([role, top, *rest]))
    return names


def _keys(path: tuple) -> list[str]:
    """A pytree path as plain names: `params['layer1']['kernel']` -> layer1, kernel."""
    return list(models.path_names(path))


def to_graph_def(closed: jax_core.ClosedJaxpr, input_names: list[str], output_names: list[str]) -> GraphDef:
    """A TensorFlow GraphDef of `closed`: a node per input (named `input_names`), per primitive and per
    output (an Identity named `output_names`), each with its `_output_shapes`."""
    nodes: list[NodeDef] = []
    taken: dict[str, int] = {}

    def add(name: str, op: str, inputs: list[str], avals: list[Any], attrs: dict[str, str]) -> str:
        count = taken.get(name, 0)
        taken[name] = count + 1
        unique = name if count == 0 else f"{name}_{count}"
        node = NodeDef(name=unique, op=op, input=inputs)
        shapes = [TensorShapeProto(dim=[TensorShapeProto.Dim(size=d) for d in a.shape]) for a in avals]
        node.attr["_output_shapes"].CopyFrom(AttrValue(list=AttrValue.ListValue(shape=shapes)))
        node.attr["dtype"].CopyFrom(AttrValue(s=", ".join(str(a.dtype) for a in avals).encode()))
        for key, value in attrs.items():
            node.attr[key].CopyFrom(AttrValue(s=value.encode()))
        nodes.append(node)
        return unique

    sources: dict[Any, str] = {}  # jaxpr variable -> the node (and output) that produces it
    for var, name in zip(closed.jaxpr.invars, input_names, strict=True):
        op = "Parameter" if not name.startswith(("inputs/", "optimizer/")) else "Input"
        sources[var] = add(name, op, [], [var.aval], {})
    for var in closed.jaxpr.constvars:
        sources[var] = add("constants/const", "Const", [], [var.aval], {})
    _add_equations(closed.jaxpr, [], sources, add)
    for var, name in zip(closed.jaxpr.outvars, output_names, strict=True):
        add(name, "Identity", _inputs([var], sources), [var.aval], {})
    return GraphDef(node=nodes)


def _add_equations(jaxpr: jax_core.Jaxpr, outer: list[str], sources: dict, add) -> None:
    for eqn in jaxpr.eqns:
        scope = outer + _scope(str(eqn.source_info.name_stack))
        called = _called_jaxpr(eqn)
        if called is not None:
            for var, value in zip(called.invars, eqn.invars, strict=True):
                if not isinstance(value, jax_core.Literal):
                    sources[var] = _source(value, sources)
            for var in called.constvars:
                sources[var] = add("/".join([*scope, "const"]), "Const", [], [var.aval], {})
            name = str(eqn.params.get("name", "")).strip("_<>")
            _add_equations(called, scope + ([name] if name else []), sources, add)
            for var, value in zip(eqn.outvars, called.outvars, strict=True):
                sources[var] = _source(value, sources)
            continue
        outputs = [v for v in eqn.outvars if not isinstance(v, jax_core.DropVar)]
        name = add(
            "/".join([*scope, eqn.primitive.name]),
            eqn.primitive.name,
            _inputs(eqn.invars, sources),
            [v.aval for v in outputs],
            _params(eqn),
        )
        for k, var in enumerate(outputs):
            sources[var] = name if k == 0 else f"{name}:{k}"


def _source(var: Any, sources: dict) -> str | None:
    return None if isinstance(var, jax_core.Literal) else sources.get(var)


def _inputs(variables: list[Any], sources: dict) -> list[str]:
    """The nodes that produce `variables` (literals have none)."""
    return [s for s in (_source(v, sources) for v in variables) if s]


def _called_jaxpr(eqn: Any) -> jax_core.Jaxpr | None:
    """The jaxpr `eqn` calls with its own inputs and outputs, if it is such a call."""
    if eqn.primitive.name not in CALLS:
        return None
    for value in eqn.params.values():
        jaxpr = value.jaxpr if isinstance(value, jax_core.ClosedJaxpr) else value
        same_ends = lambda j: (len(j.invars), len(j.outvars)) == (len(eqn.invars), len(eqn.outvars))  # noqa: E731
        if isinstance(jaxpr, jax_core.Jaxpr) and same_ends(jaxpr):
            return jaxpr
    return None


def _scope(name_stack: str) -> list[str]:
    """Scope names from a JAX name stack: `jvp(layer1)` -> layer1; the backward pass,
    `transpose(jvp(loss))/l2`, -> gradients/loss/l2."""
    scope: list[str] = []
    for entry in filter(None, name_stack.split("/")):
        transposed = False
        while match := _WRAPPED.match(entry):
            transposed |= match.group(1) == "transpose"
            entry = match.group(2)
        if transposed and "gradients" not in scope:
            scope.append("gradients")
        if entry:
            scope.append(entry)
    return scope


def _params(eqn: Any) -> dict[str, str]:
    """An equation's short parameters (dimension numbers, axes, ...) as node attributes."""
    shown = {}
    for key, value in eqn.params.items():
        text = str(value)
        if len(text) <= 120 and "\n" not in text:
            shown[key] = text
    return shown
