"""Hostile inputs to migration: match, linen_to_nnx, nnx_to_linen, optimizer state, verify."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import nnx

import linnx
from linnx import migrate

from ._harness import Table
from .models import (
    Net,
    Other,
    Port,
    X,
    linen_opt_state,
    linen_variables,
    optimizer,
    plan,
    with_leaf,
)

table = Table("migrate")
case = table.case

KERNEL = ("params", "Dense_0", "kernel")

# -- match ------------------------------------------------------------------------------------


@case(
    "match/nnx_model-is-a-class",
    migrate.MigrationTypeError,
    r"match\(nnx_model=Port\)",
    r"build it first",
)
def _(env):
    return lambda: migrate.match(Net(), Port, X)


@case(
    "match/linen_module-is-a-class",
    migrate.MigrationTypeError,
    r"match\(linen_module=\.\.\.\).*the class Net",
    r"instantiate it",
)
def _(env):
    return lambda: migrate.match(Net, Port(), X)


@case(
    "match/models-swapped",
    migrate.MigrationTypeError,
    r"match\(linen_module=\.\.\.\)",
    r"the NNX model goes to nnx_model=",
)
def _(env):
    model = Port()
    return lambda: migrate.match(model, Net(), X), model


@case(
    "match/linen_module-is-None",
    migrate.MigrationTypeError,
    r"match\(linen_module=\.\.\.\).*NoneType",
    r"pass the Linen module instance",
)
def _(env):
    return lambda: migrate.match(None, Port(), X)


@case(
    "match/linen_kwargs-is-an-int",
    migrate.MigrationTypeError,
    r"match\(linen_kwargs=\.\.\.\)",
    r"linen_kwargs=\{'train': False\}",
)
def _(env):
    return lambda: migrate.match(Net(), Port(), X, linen_kwargs=3)


@case(
    "match/rename-is-a-list",
    migrate.RenameError,
    r"rename=\['Dense_0'\]",
    r"expected a mapping like \{'Dense_0': 'linear'\}",
)
def _(env):
    return lambda: migrate.match(Net(), Port(), X, rename=["Dense_0"])


@case(
    "match/rename-key-matches-nothing",
    migrate.RenameError,
    r"'Dense_7' matched no Linen path",
    r"use one of these names",
)
def _(env):
    return lambda: migrate.match(Net(), Port(), X, rename={"Dense_7": "fc"})


@case(
    "match/rename-on-a-top-level-layer",
    migrate.RenameError,
    r"'Dense_0' matched no Linen path",
    r"variables sit at its top level\): bias, kernel",
)
def _(env):
    model = Other()
    return lambda: migrate.match(nn.Dense(4), model, X, rename={"Dense_0": "proj"}), model


class _PartlyPorted(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.body = linnx.ToNNX(nn.Dense(4), rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.body(x))


@case(
    "match/tonnx-part-never-lazy-initialized",
    linnx.NotInitializedError,
    r"match\(nnx_model=\.\.\.\).*lazy_init was never run\): body",
    r"nnx_model = linnx\.lazy_init\(nnx_model, x\)",
)
def _(env):
    model = _PartlyPorted()
    return lambda: migrate.match(nn.Sequential([nn.Dense(4), nn.Dense(2)]), model, X), model


@case(
    "linen_to_nnx/port-built-with-another-width",
    migrate.ShapeMismatchError,
    r"every width differs: 4 vs 6",
    r"build the NNX model with the Linen model's sizes",
)
def _(env):
    model = Port(features=6)
    wrong = migrate.match(Net(), model, X, linen_kwargs={"train": False})
    variables = linen_variables()
    return lambda: migrate.linen_to_nnx(variables, model, wrong), model, variables


@case(
    "match/sample-of-the-wrong-shape",
    migrate.TraceError,
    r"(Linen|NNX) model could not run",
    r"pass sample inputs the model accepts",
)
def _(env):
    model = Port()
    return lambda: migrate.match(Net(), model, jnp.ones((2, 5))), model


class Parallel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(x) + 0 * nn.Dense(4)(x)


class OneLinear(nnx.Module):
    def __init__(self):
        self.proj = nnx.Linear(3, 4, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.proj(x)


@case("match/ambiguous-pairing", migrate.AmbiguousPairingError, r"Dense_0.*proj", r"rename=\{")
def _(env):
    return lambda: migrate.match(Parallel(), OneLinear(), X)


class _LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x + nn.Dense(3)(nn.relu(nn.Dense(3)(x)))


class _TwoBlocks(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = _LinenBlock()(x)
        return x


class _NnxBlock(nnx.Module):
    def __init__(self):
        self.a = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
        self.b = nnx.Linear(3, 3, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return x + self.b(nnx.relu(self.a(x)))


class _ThreeBlocks(nnx.Module):
    def __init__(self):
        self.blocks = nnx.List([_NnxBlock() for _ in range(3)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class _NormedBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(8)(nn.LayerNorm()(x))
        return x + nn.Dense(8)(nn.relu(y))


class _Decoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = _NormedBlock()(x)
        return x


class _TwoNormedBlocks(nn.Module):
    """An embedding, a decoder of two pre-norm MLP blocks, and a head."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8, name="embed")(x)
        return nn.Dense(3, name="head")(_Decoder(name="decoder")(x))


class _NnxNormedBlock(nnx.Module):
    def __init__(self, rngs):
        self.ln = nnx.LayerNorm(8, rngs=rngs)
        self.fc1 = nnx.Linear(8, 8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 8, rngs=rngs)

    def __call__(self, x):
        return x + self.fc2(nnx.relu(self.fc1(self.ln(x))))


class _NnxDecoder(nnx.Module):
    def __init__(self, rngs):
        self.blocks = nnx.List([_NnxNormedBlock(rngs) for _ in range(3)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class _ThreeNormedBlocks(nnx.Module):
    """The port, with one block too many."""

    def __init__(self):
        rngs = nnx.Rngs(0)
        self.embed = nnx.Linear(3, 8, rngs=rngs)
        self.decoder = _NnxDecoder(rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(self.decoder(self.embed(x)))


@case(
    "match/port-with-an-extra-block",
    migrate.AmbiguousPairingError,
    r"The NNX model has decoder/blocks/2 \(6 variables\) that the Linen model",
    r"build the NNX model with 2 blocks",
)
def _(env):
    model = _ThreeNormedBlocks()
    return lambda: migrate.match(_TwoNormedBlocks(), model, X), model


@case(
    "linen_to_nnx/port-with-an-extra-block",
    migrate.MissingWeightsError,
    r"the NNX model has blocks/2 \(4 variables\) that the Linen variables do not have",
    r"allow_missing=",
)
def _(env):
    model = _ThreeBlocks()
    plan = migrate.match(_TwoBlocks(), model, X)
    variables = _TwoBlocks().init(jax.random.key(0), X)
    return lambda: migrate.linen_to_nnx(variables, model, plan), model, variables


# -- linen_to_nnx -----------------------------------------------------------------------------


@case(
    "linen_to_nnx/variables-is-None",
    migrate.MigrationTypeError,
    r"linen_to_nnx\(variables=\.\.\.\)",
    r"variables=\{'params'",
)
def _(env):
    model = Port()
    return lambda: migrate.linen_to_nnx(None, model, plan()), model


@case(
    "linen_to_nnx/variables-is-a-list",
    migrate.MigrationTypeError,
    r"linen_to_nnx\(variables=\.\.\.\).*got list",
    r"variables=\{'params'",
)
def _(env):
    model = Port()
    return lambda: migrate.linen_to_nnx([1, 2], model, plan()), model


@case(
    "linen_to_nnx/params-without-collection",
    migrate.MissingWeightsError,
    r"none of the collections the plan reads \(batch_stats, params\)",
    r"not variables\['params'\]",
)
def _(env):
    model, variables = Port(), linen_variables()
    return lambda: migrate.linen_to_nnx(variables["params"], model, plan()), model, variables


@case(
    "linen_to_nnx/boxed-leaves-with-a-value-level",
    migrate.MissingWeightsError,
    r"params/Dense_0/kernel/value -> fc/kernel",
    r"trailing 'value' level",
)
def _(env):
    model, variables = Port(), linen_variables()
    boxed = {**variables, "params": jax.tree.map(lambda a: {"value": a}, variables["params"])}
    return lambda: migrate.linen_to_nnx(boxed, model, plan()), model, boxed


@case(
    "linen_to_nnx/leaves-under-other-names",
    migrate.MissingWeightsError,
    r"params/Dense_7/kernel -> fc/kernel",
    r"rename them in the variables dict",
)
def _(env):
    model, variables = Port(), linen_variables()
    params = dict(variables["params"])
    params["Dense_7"] = params.pop("Dense_0")
    renamed = {**variables, "params": params}
    return lambda: migrate.linen_to_nnx(renamed, model, plan()), model, renamed


@case(
    "linen_to_nnx/plan-is-None",
    migrate.MigrationTypeError,
    r"linen_to_nnx\(plan=\.\.\.\)",
    r"plan = migrate\.match\(",
)
def _(env):
    model = Port()
    return lambda: migrate.linen_to_nnx(linen_variables(), model, None), model


@case(
    "linen_to_nnx/model-is-a-class",
    migrate.MigrationTypeError,
    r"linen_to_nnx\(nnx_model=Port\)",
    r"nnx\.eval_shape",
)
def _(env):
    return lambda: migrate.linen_to_nnx(linen_variables(), Port, plan())


@case(
    "linen_to_nnx/model-is-the-Linen-module",
    migrate.MigrationTypeError,
    r"linen_to_nnx\(nnx_model=\.\.\.\).*got Net",
    r"hand-ported NNX model",
)
def _(env):
    return lambda: migrate.linen_to_nnx(linen_variables(), Net(), plan())


@case(
    "linen_to_nnx/model-of-another-structure",
    linnx.StructureMismatchError,
    r"missing \(6\): fc/bias, fc/kernel",
    r"build the plan with match",
)
def _(env):
    model = Other()
    return lambda: migrate.linen_to_nnx(linen_variables(), model, plan()), model


@case(
    "linen_to_nnx/leaf-of-the-wrong-shape",
    migrate.ShapeMismatchError,
    r"params/Dense_0/kernel -> fc/kernel: NNX expects \(3, 4\) float32, Linen has \(5, 4\)",
    r"build the NNX model with the Linen model's sizes",
)
def _(env):
    model = Port()
    variables = with_leaf(linen_variables(), KERNEL, jnp.ones((5, 4)))
    return lambda: migrate.linen_to_nnx(variables, model, plan()), model, variables


@case(
    "linen_to_nnx/leaf-that-is-a-string",
    migrate.ShapeMismatchError,
    r"params/Dense_0/kernel -> fc/kernel: .*a str \('abc'\), not an array",
    r"Fix: build the NNX model",
)
def _(env):
    model = Port()
    variables = with_leaf(linen_variables(), KERNEL, "abc")
    return lambda: migrate.linen_to_nnx(variables, model, plan()), model, variables


@case(
    "linen_to_nnx/dtype-differs-without-cast",
    migrate.ShapeMismatchError,
    r"fc/kernel: NNX expects \(3, 4\) float32, Linen has \(3, 4\) bfloat16",
    r"cast=True",
)
def _(env):
    model = Port()
    variables = linen_variables()
    kernel = variables["params"]["Dense_0"]["kernel"].astype(jnp.bfloat16)
    variables = with_leaf(variables, KERNEL, kernel)
    return lambda: migrate.linen_to_nnx(variables, model, plan()), model, variables


@case(
    "linen_to_nnx/missing-collection",
    migrate.MissingWeightsError,
    r"missing \(2\): norm/mean, norm/var",
    r"allow_missing=\['norm/mean', 'norm/var'\]",
)
def _(env):
    model, variables = Port(), linen_variables()
    only_params = {"params": variables["params"]}
    return lambda: migrate.linen_to_nnx(only_params, model, plan()), model, variables


@case(
    "linen_to_nnx/extra-collection",
    migrate.UnusedWeightsError,
    r"unexpected \(1\): ema/w",
    r"allow_unused=\['ema/w'\]",
)
def _(env):
    model = Port()
    variables = {**linen_variables(), "ema": {"w": jnp.ones(3)}}
    return lambda: migrate.linen_to_nnx(variables, model, plan()), model, variables


@case(
    "linen_to_nnx/missing-leaf",
    migrate.MissingWeightsError,
    r"missing \(1\): fc/bias",
    r"rename=\{'<Linen path>': '<NNX path>'\}",
)
def _(env):
    model, variables = Port(), linen_variables()
    params = dict(variables["params"])
    params["Dense_0"] = {"kernel": params["Dense_0"]["kernel"]}
    broken = {**variables, "params": params}
    return lambda: migrate.linen_to_nnx(broken, model, plan()), model, variables


@case(
    "linen_to_nnx/allow_missing-is-an-int",
    migrate.MigrationTypeError,
    r"allow_missing=3",
    r"allow_missing=\['extra/\*'\]",
)
def _(env):
    model = Port()
    return (lambda: migrate.linen_to_nnx(linen_variables(), model, plan(), allow_missing=3), model)


@case(
    "linen_to_nnx/allow_unused-holds-a-non-string",
    migrate.MigrationTypeError,
    r"allow_unused=\[None\]",
    r"allow_unused=\['extra/\*'\]",
)
def _(env):
    model = Port()
    return (
        lambda: migrate.linen_to_nnx(linen_variables(), model, plan(), allow_unused=[None]),
        model,
    )


@case(
    "linen_to_nnx/NaN-in-a-weight",
    migrate.NonFiniteValuesError,
    r"params/Dense_0/kernel -> fc/kernel: 1 NaN, 0 inf",
    r"allow_nonfinite=True",
)
def _(env):
    model, variables = Port(), linen_variables()
    kernel = variables["params"]["Dense_0"]["kernel"].at[0, 0].set(jnp.nan)
    variables = with_leaf(variables, KERNEL, kernel)
    return lambda: migrate.linen_to_nnx(variables, model, plan()), model, variables


@case(
    "linen_to_nnx/inf-in-batch-statistics",
    migrate.NonFiniteValuesError,
    r"batch_stats/BatchNorm_0/var -> norm/var: 0 NaN, 4 inf",
    r"allow_nonfinite=\['batch_stats/BatchNorm_0/var'\]",
)
def _(env):
    model, variables = Port(), linen_variables()
    path = ("batch_stats", "BatchNorm_0", "var")
    variables = with_leaf(variables, path, jnp.full((4,), jnp.inf))
    return lambda: migrate.linen_to_nnx(variables, model, plan()), model, variables


class HalfPort(nnx.Module):
    """A float16 port: casting float32 weights to it may overflow."""

    def __init__(self):
        rngs = nnx.Rngs(0)
        self.fc = nnx.Linear(3, 4, param_dtype=jnp.float16, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.fc(x))


@case(
    "linen_to_nnx/cast-overflows-to-inf",
    migrate.NonFiniteValuesError,
    r"params/Dense_0/kernel -> fc/kernel: 0 NaN, 1 inf",
    r"allow_nonfinite=True",
)
def _(env):
    model, variables = HalfPort(), linen_variables()
    half_plan = migrate.match(Net(), model, X, linen_kwargs={"train": False})
    kernel = variables["params"]["Dense_0"]["kernel"].at[0, 0].set(1e6)  # float16 max: 65504
    variables = with_leaf(variables, KERNEL, kernel)
    return (lambda: migrate.linen_to_nnx(variables, model, half_plan, cast=True), model, variables)


# -- nnx_to_linen -----------------------------------------------------------------------------


@case(
    "nnx_to_linen/model-is-None",
    migrate.MigrationTypeError,
    r"nnx_to_linen\(nnx_model=\.\.\.\).*NoneType",
    r"pass the NNX model object",
)
def _(env):
    return lambda: migrate.nnx_to_linen(None, plan())


@case(
    "nnx_to_linen/plan-is-a-dict",
    migrate.MigrationTypeError,
    r"nnx_to_linen\(plan=\.\.\.\).*got dict",
    r"plan = migrate\.match\(",
)
def _(env):
    model = Port()
    return lambda: migrate.nnx_to_linen(model, {}), model


@case(
    "nnx_to_linen/model-of-another-structure",
    linnx.StructureMismatchError,
    r"missing \(6\): fc/bias",
    r"build the plan with match",
)
def _(env):
    model = Other()
    return lambda: migrate.nnx_to_linen(model, plan()), model


@case(
    "nnx_to_linen/NaN-in-the-model",
    migrate.NonFiniteValuesError,
    r"params/Dense_0/bias: 4 NaN, 0 inf",
    r"allow_nonfinite=\['params/Dense_0/bias'\]",
)
def _(env):
    model = Port()
    model.fc.bias.set_value(jnp.full((4,), jnp.nan))
    return lambda: migrate.nnx_to_linen(model, plan()), model


@case(
    "nnx_to_linen/model-lacks-a-layer",
    migrate.MissingWeightsError,
    r"missing \(4\): batch_stats/BatchNorm_0/mean",
    r"allow_missing=\['batch_stats/BatchNorm_0/mean'",
)
def _(env):
    model = OneLinear()
    partial = migrate.match(Net(), model, X, linen_kwargs={"train": False})
    return lambda: migrate.nnx_to_linen(model, partial), model


# -- optimizer state ---------------------------------------------------------------------------


@case(
    "opt_state_to_nnx/target-is-the-model",
    migrate.MigrationTypeError,
    r"opt_state_to_nnx\(target=\.\.\.\).*got Port",
    r"nnx\.Optimizer\(model, tx, wrt=",
)
def _(env):
    model = Port()
    return lambda: migrate.opt_state_to_nnx(linen_opt_state(), model, plan()), model


@case(
    "opt_state_to_nnx/target-is-None",
    migrate.MigrationTypeError,
    r"opt_state_to_nnx\(target=\.\.\.\).*NoneType",
    r"nnx\.Optimizer\(model, tx, wrt=",
)
def _(env):
    return lambda: migrate.opt_state_to_nnx(linen_opt_state(), None, plan())


@case(
    "opt_state_to_nnx/plan-is-None",
    migrate.MigrationTypeError,
    r"opt_state_to_nnx\(plan=\.\.\.\)",
    r"plan = migrate\.match\(",
)
def _(env):
    opt = optimizer(Port())
    return lambda: migrate.opt_state_to_nnx(linen_opt_state(), opt, None), opt


@case(
    "opt_state_to_nnx/state-of-another-optimizer",
    migrate.MissingWeightsError,
    r"missing \(9\): 0/count, 0/mu/fc/bias",
    r"same optax transformation on both sides",
)
def _(env):
    opt = optimizer(Port())
    sgd = optax.sgd(0.1, momentum=0.9).init(linen_variables()["params"])
    return lambda: migrate.opt_state_to_nnx(sgd, opt, plan()), opt, sgd


@case(
    "opt_state_to_nnx/NaN-in-adam-moments",
    migrate.NonFiniteValuesError,
    r"0/nu/fc/kernel: 12 NaN, 0 inf",
    r"allow_nonfinite=True",
)
def _(env):
    opt = optimizer(Port())
    state = linen_opt_state()
    nu = dict(state[0].nu)
    nu["Dense_0"] = {**nu["Dense_0"], "kernel": jnp.full((3, 4), jnp.nan)}
    state = (state[0]._replace(nu=nu), *state[1:])
    return lambda: migrate.opt_state_to_nnx(state, opt, plan()), opt, state


@case(
    "opt_state_to_linen/source-is-the-model",
    migrate.MigrationTypeError,
    r"opt_state_to_linen\(source=\.\.\.\).*got Port",
    r"nnx\.Optimizer\(model, tx, wrt=",
)
def _(env):
    model = Port()
    return lambda: migrate.opt_state_to_linen(model, plan()), model


@case(
    "opt_state_to_linen/tx-is-an-int",
    migrate.MigrationTypeError,
    r"opt_state_to_linen\(tx=3\)",
    r"tx=optax\.adam\(1e-3\)",
)
def _(env):
    opt = optimizer(Port())
    return lambda: migrate.opt_state_to_linen(opt.opt_state, plan(), tx=3), opt


@case(
    "opt_state_to_linen/no-tx",
    migrate.MigrationError,
    r"opt_state_to_linen\(source, plan\)",
    r"pass tx=optax\.adam",
)
def _(env):
    opt = optimizer(Port())
    return lambda: migrate.opt_state_to_linen(opt.opt_state, plan()), opt


@case(
    "opt_state_to_linen/plan-is-None",
    migrate.MigrationTypeError,
    r"opt_state_to_linen\(plan=\.\.\.\)",
    r"plan = migrate\.match\(",
)
def _(env):
    opt = optimizer(Port())
    return lambda: migrate.opt_state_to_linen(opt, None), opt


# -- verify and the helpers -------------------------------------------------------------------


@case(
    "verify/linen_module-is-a-class",
    migrate.MigrationTypeError,
    r"verify\(linen_module=\.\.\.\).*the class Net",
    r"instantiate it",
)
def _(env):
    model = Port()
    return lambda: migrate.verify(Net, linen_variables(), model, X, plan=plan()), model


@case(
    "verify/nnx_model-is-a-class",
    migrate.MigrationTypeError,
    r"verify\(nnx_model=Port\)",
    r"build it first",
)
def _(env):
    return lambda: migrate.verify(Net(), linen_variables(), Port, X, plan=plan())


@case(
    "verify/variables-is-None",
    migrate.MigrationTypeError,
    r"verify\(variables=\.\.\.\)",
    r"variables=\{'params'",
)
def _(env):
    model = Port()
    return lambda: migrate.verify(Net(), None, model, X, plan=plan()), model


@case(
    "verify/plan-is-an-int",
    migrate.MigrationTypeError,
    r"verify\(plan=\.\.\.\)",
    r"plan = migrate\.match\(",
)
def _(env):
    model = Port()
    return lambda: migrate.verify(Net(), linen_variables(), model, X, plan=3), model


@case("verify/atol-is-a-string", migrate.MigrationTypeError, r"verify\(atol='x'\)", r"atol=1e-5")
def _(env):
    model = Port()
    return (
        lambda: migrate.verify(Net(), linen_variables(), model, X, plan=plan(), atol="x"),
        model,
    )


@case(
    "verify/sample-of-the-wrong-shape",
    migrate.TraceError,
    r"Linen model could not run on the sample inputs in eval mode",
    r"pass the sample inputs both models accept",
)
def _(env):
    model, variables = Port(), linen_variables()
    return (
        lambda: migrate.verify(Net(), variables, model, jnp.ones((2, 7)), plan=plan()),
        model,
        variables,
    )


@case(
    "verify/NNX-model-fails-in-train-mode",
    migrate.TraceError,
    r"NNX model could not run on the sample inputs in train mode",
    r"nnx_train_kwargs=",
)
def _(env):
    model, variables = Port(), linen_variables()
    return (
        lambda: migrate.verify(
            Net(),
            variables,
            model,
            X,
            plan=plan(),
            linen_kwargs={"train": False},
            nnx_train_kwargs={"bogus": 1},
        ),
        model,
        variables,
    )


@case(
    "VerifyReport/raise_for_failure",
    migrate.VerificationError,
    r"output\s+1\s+1\s+FAIL",
    r"check the rows marked FAIL",
)
def _(env):
    report = migrate.VerifyReport(
        [migrate.Difference("eval", "output", 1.0, 1.0, False)], atol=1e-5, rtol=1e-5
    )
    return report.raise_for_failure


@case(
    "train_kwargs_for/None",
    migrate.MigrationTypeError,
    r"train_kwargs_for\(linen_kwargs",
    r"linen_kwargs=\{'training': False\}",
)
def _(env):
    return lambda: migrate.train_kwargs_for(None)


@case(
    "to_nnx_value/pair-is-None",
    migrate.MigrationTypeError,
    r"to_nnx_value\(pair=None\)",
    r"for p in plan\.pairs",
)
def _(env):
    return lambda: migrate.to_nnx_value(None, [jnp.ones(2)])


@case(
    "Layout/unknown-kind",
    migrate.MigrationError,
    r"Layout\(kind='bogus'\)",
    r"Layout\('stack', nnx_axis=0\)",
)
def _(env):
    return lambda: migrate.Layout("bogus")


@case(
    "Layout/stack-without-axis",
    migrate.MigrationError,
    r"Layout\('stack'\) has no nnx_axis",
    r"Layout\('stack', nnx_axis=0\)",
)
def _(env):
    return lambda: migrate.Layout("stack").to_nnx([jnp.ones(2), jnp.ones(2)])


@case(
    "Plan/pairs-is-None",
    migrate.MigrationTypeError,
    r"Plan\(pairs=None\)",
    r"build plans with match",
)
def _(env):
    return lambda: migrate.Plan(None, (), (), (), (), {}, {})


CASES = table.cases
