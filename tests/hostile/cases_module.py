"""Hostile inputs to Linen-style modules: linnx.Module, compact, nn layers, functional."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

import linnx
import linnx.module as lm

from ._harness import Table
from .models import X

table = Table("module")
case = table.case


class MLP(lm.Module):
    @lm.compact
    def __call__(self, x):
        return lm.nn.Dense(2)(lm.nn.Dense(3)(x))


class DenseThenClash(lm.Module):
    """`proj` is created, then a variable claims its name: the pass fails half-way."""

    @lm.compact
    def __call__(self, x):
        x = lm.nn.Dense(3, name="proj")(x)
        return x * self.param("proj", nnx.initializers.ones, (3,))


class Counter(lm.Module):
    @lm.compact
    def __call__(self, x):
        count = self.variable("counter", "count", jnp.zeros, (), jnp.int32)
        count[...] += 1
        return x


def mlp_variables():
    return MLP().init(jax.random.key(0), X)


# -- linnx.Module -----------------------------------------------------------------------------


@case(
    "Module/called-before-lazy_init",
    linnx.NotInitializedError,
    r"cannot create the submodule 'Dense_0'",
    r"linnx\.lazy_init\(model, x\)",
)
def _(env):
    model = MLP(rngs=nnx.Rngs(0))
    return lambda: model(X), model


@case(
    "Module/lazy_init-fails-half-way",
    lm.NameInUseError,
    r"'proj' is already a Dense",
    r"pick another name",
)
def _(env):
    # `proj` is built before the clash is found: nothing may remain of the failed pass.
    model = DenseThenClash(rngs=nnx.Rngs(0))
    return lambda: linnx.lazy_init(model, X), model


@case(
    "Module/lazy_init-without-rngs",
    linnx.RngStreamError,
    r"make_rng\('params'\)",
    r"rngs=nnx\.Rngs\(0\)",
)
def _(env):
    model = MLP()
    return lambda: model.lazy_init(X), model


@case(
    "Module/rngs-is-a-string", linnx.BridgeTypeError, r"Dense\(rngs='x'\)", r"rngs=nnx\.Rngs\(0\)"
)
def _(env):
    return lambda: lm.nn.Dense(3, rngs="x")


@case(
    "Module/init-rngs-is-a-string",
    linnx.BridgeTypeError,
    r"rngs='x'",
    r"rngs=\{'params': jax\.random\.key\(0\)\}",
)
def _(env):
    return lambda: MLP().init("x", X)


@case(
    "Module/init-mutable-False",
    linnx.BridgeTypeError,
    r"init\(mutable=False\)",
    r"leave `mutable` out",
)
def _(env):
    return lambda: MLP().init(jax.random.key(0), X, mutable=False)


@case(
    "Module/apply-variables-is-None",
    linnx.BridgeTypeError,
    r"apply\(variables=\.\.\.\)",
    r"expected the dict that init returns",
)
def _(env):
    return lambda: MLP().apply(None, X)


@case(
    "Module/apply-params-without-collection",
    linnx.StructureMismatchError,
    r"missing \(1\): params/Dense_1/kernel",
    r"Did you pass variables\['params'\]",
)
def _(env):
    variables = mlp_variables()
    return lambda: MLP().apply(variables["params"], X), variables


@case(
    "Module/apply-input-of-another-shape",
    linnx.StructureMismatchError,
    r"params/Dense_1/kernel: expected shape \(5, 3\)",
    r"inputs of this shape",
)
def _(env):
    variables = mlp_variables()
    return lambda: MLP().apply(variables, jnp.ones((2, 5))), variables


@case(
    "Module/apply-leaf-that-is-a-string",
    linnx.StructureMismatchError,
    r"params/Dense_1/kernel: expected shape \(3, 3\), got shape \(\)",
    r"Fix: pass the variables",
)
def _(env):
    variables = mlp_variables()
    params = dict(variables["params"])
    params["Dense_1"] = {**params["Dense_1"], "kernel": "weights"}
    return lambda: MLP().apply({"params": params}, X), variables


@case(
    "Module/apply-mutable-is-an-int",
    linnx.BridgeTypeError,
    r"mutable=3",
    r"mutable=\['batch_stats'\]",
)
def _(env):
    variables = mlp_variables()
    return lambda: MLP().apply(variables, X, mutable=3), variables


@case(
    "Module/apply-mutable-missing-collection",
    linnx.MutableCollectionError,
    r"'batch_stat' is neither in the variables",
    r"check the spelling",
)
def _(env):
    variables = mlp_variables()
    return lambda: MLP().apply(variables, X, mutable=["batch_stat"]), variables


@case(
    "Module/apply-writes-an-immutable-collection",
    linnx.MutableCollectionError,
    r"changed counter/count",
    r"mutable=\['counter'\]",
)
def _(env):
    variables = Counter().init(0, X)
    return lambda: Counter().apply(variables, X), variables


@case(
    "Module/apply-method-is-an-int",
    linnx.BridgeTypeError,
    r"method=3",
    r"a function f\(module, \*args\)",
)
def _(env):
    variables = mlp_variables()
    return lambda: MLP().apply(variables, X, method=3), variables


@case(
    "Module/apply-unknown-method",
    linnx.UnknownMethodError,
    r"method='encode'",
    r"Available methods: __call__",
)
def _(env):
    variables = mlp_variables()
    return lambda: MLP().apply(variables, X, method="encode"), variables


@case(
    "Module/apply-rngs-is-a-string",
    linnx.BridgeTypeError,
    r"rngs='dropout'",
    r"rngs=\{'params': jax\.random\.key\(0\)\}",
)
def _(env):
    variables = mlp_variables()
    return lambda: MLP().apply(variables, X, rngs="dropout"), variables


@case("Module/same-name-twice", lm.NameInUseError, r"'proj' is used twice", r"Fix:")
def _(env):
    class Twice(lm.Module):
        @lm.compact
        def __call__(self, x):
            return lm.nn.Dense(3, name="proj")(lm.nn.Dense(3, name="proj")(x))

    return lambda: Twice().init(0, X)


@case(
    "Module/a-Linen-module-called-inline",
    lm.ModuleDefinitionError,
    r"a Linen module was called",
    r"self\.submodule\(nn\.Dense\(features\)\)",
)
def _(env):
    class Inline(lm.Module):
        @lm.compact
        def __call__(self, x):
            return nn.Dense(3)(x)

    return lambda: Inline().init(0, X)


@case(
    "Module/submodule-given-a-built-module",
    linnx.BridgeTypeError,
    r"got a built Linear",
    r"self\.submodule\(nnx\.Linear, 3, 4\)",
)
def _(env):
    class Built(lm.Module):
        @lm.compact
        def __call__(self, x):
            return self.submodule(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))(x)

    return lambda: Built().init(0, X)


# -- compact ----------------------------------------------------------------------------------


@case("compact/an-int", lm.ModuleDefinitionError, r"compact\(3\)", r"use it as a decorator")
def _(env):
    return lambda: lm.compact(3)


@case(
    "compact/a-staticmethod",
    lm.ModuleDefinitionError,
    r"compact\(<staticmethod",
    r"use it as a decorator",
)
def _(env):
    return lambda: lm.compact(staticmethod(lambda x: x))


@case("compact/two-compact-methods", lm.ModuleDefinitionError, r"2 compact methods", r"at most one")
def _(env):
    def define():
        class TwoCompact(lm.Module):
            @lm.compact
            def encode(self, x):
                return x

            @lm.compact
            def decode(self, x):
                return x

    return define


# -- functional -------------------------------------------------------------------------------


@case(
    "functional/None",
    linnx.BridgeTypeError,
    r"functional\(module_type=None\)",
    r"functional\(nnx\.Linear\)\(3, 4\)",
)
def _(env):
    return lambda: lm.functional(None)


@case(
    "functional/an-instance",
    linnx.BridgeTypeError,
    r"an instance of Linear",
    r"pass the class and its arguments",
)
def _(env):
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    return lambda: lm.functional(layer), layer


@case(
    "functional/a-Linen-class",
    linnx.BridgeTypeError,
    r"flax\.linen\.linear\.Dense",
    r"functional already",
)
def _(env):
    return lambda: lm.functional(nn.Dense)


@case(
    "functional/constructor-arguments-do-not-fit",
    linnx.BridgeTypeError,
    r"'out_features'",
    r"functional\(Linear\)\(3, 4\)",
)
def _(env):
    return lambda: lm.functional(nnx.Linear)(3).init(rngs=nnx.Rngs(0))


@case(
    "functional/init-rngs-is-a-string",
    linnx.BridgeTypeError,
    r"init\(rngs='x'\)",
    r"init\(rngs=nnx\.Rngs\(0\)\)",
)
def _(env):
    return lambda: lm.functional(nnx.Linear)(3, 4).init(rngs="x")


@case(
    "functional/init-rngs-for-a-class-without-rngs",
    linnx.BridgeTypeError,
    r"takes no `rngs` argument",
    r"init\(\) without rngs",
)
def _(env):
    class Plain(nnx.Module):
        def __init__(self, n):
            self.w = nnx.Param(jnp.ones(n))

    return lambda: lm.functional(Plain)(3).init(rngs=nnx.Rngs(0))


@case(
    "functional/apply-before-init",
    linnx.NotInitializedError,
    r"functional\(Linear\)",
    r"f\.init\(rngs=nnx\.Rngs\(0\)\)",
)
def _(env):
    return lambda: lm.functional(nnx.Linear)(3, 4).apply({})(X)


@case(
    "functional/apply-unknown-method",
    linnx.UnknownMethodError,
    r"method='encode'",
    r"has no method named",
)
def _(env):
    f = lm.functional(nnx.Linear)(3, 4)
    state = f.init(rngs=nnx.Rngs(0))
    return lambda: f.apply(state, method="encode"), state


@case(
    "functional/apply-state-is-None",
    linnx.BridgeTypeError,
    r"states\[0\]=None",
    r"f\.apply\(state\)\(x\)",
)
def _(env):
    f = lm.functional(nnx.Linear)(3, 4)
    f.init(rngs=nnx.Rngs(0))
    return lambda: f.apply(None)


@case(
    "functional/apply-state-of-another-module",
    linnx.StructureMismatchError,
    r"missing \(1\): kernel\n  unexpected \(3\): mean, scale, var",
    r"pass the state that init returned",
)
def _(env):
    f = lm.functional(nnx.Linear)(3, 4)
    f.init(rngs=nnx.Rngs(0))
    other = nnx.state(nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    return lambda: f.apply(other)(X), other


@case(
    "functional/apply-only-part-of-the-state",
    linnx.StructureMismatchError,
    r"missing \(1\): bias",
    r"together cover every variable",
)
def _(env):
    f = lm.functional(nnx.Linear)(3, 4)
    state = f.init(rngs=nnx.Rngs(0))
    part = nnx.State({"kernel": state["kernel"]})
    return lambda: f.apply(part)(X), state


CASES = table.cases
