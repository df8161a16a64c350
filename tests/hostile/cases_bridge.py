"""Hostile inputs to the bridge: ToNNX, lazy_init, ToLinen, to_linen(_class), NNXMeta, registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

import linnx

from ._harness import REGISTRY, Table
from .models import DropoutDense, TwoWrappers, X, dense_tonnx, tolinen_variables

table = Table("bridge")
case = table.case

# -- ToNNX: construction -------------------------------------------------------------------


@case("ToNNX/module-is-None", linnx.BridgeTypeError, r"ToNNX\(module=\.\.\.\)", r"Fix: e\.g\.")
def _(env):
    return lambda: linnx.ToNNX(None)


@case("ToNNX/module-is-a-Linen-class", linnx.BridgeTypeError, r"got the class Dense",
      r"ToNNX\(Dense\(\.\.\.\)")
def _(env):
    return lambda: linnx.ToNNX(nn.Dense, rngs=nnx.Rngs(0))


@case("ToNNX/module-is-an-NNX-class", linnx.BridgeTypeError, r"NNX module class Linear",
      r"without ToNNX")
def _(env):
    return lambda: linnx.ToNNX(nnx.Linear, rngs=nnx.Rngs(0))


@case("ToNNX/module-is-an-NNX-instance", linnx.BridgeTypeError, r"NNX module Linear",
      r"use it directly")
def _(env):
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    return lambda: linnx.ToNNX(layer), layer


@case("ToNNX/rngs-is-an-int", linnx.BridgeTypeError, r"ToNNX\(rngs=\.\.\.\)",
      r"rngs=nnx\.Rngs\(0\)")
def _(env):
    return lambda: linnx.ToNNX(nn.Dense(4), rngs=0)


# -- ToNNX: calls ----------------------------------------------------------------------------


@case("ToNNX/called-before-lazy_init", linnx.NotInitializedError, r"ToNNX\(Dense\)",
      r"lazy_init\(model, x\)")
def _(env):
    model = linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0))
    return lambda: model(X), model


@case("ToNNX/input-of-another-shape", linnx.StructureMismatchError, r"params/kernel",
      r"inputs shaped like the sample")
def _(env):
    model = dense_tonnx()
    return lambda: model(jnp.ones((2, 5))), model


@case("ToNNX/variable-replaced-by-wrong-shape", linnx.StructureMismatchError,
      r"params/kernel: expected shape \(3, 4\)", r"original shape")
def _(env):
    model = dense_tonnx()
    model.params["kernel"].set_value(jnp.ones((5, 4)))
    return lambda: model(X), model


@case("ToNNX/method-is-an-int", linnx.BridgeTypeError, r"method=3", r"method='encode'")
def _(env):
    model = dense_tonnx()
    return lambda: model(X, method=3), model


@case("ToNNX/unknown-method-name", linnx.UnknownMethodError, r"method='encode'",
      r"Available methods")
def _(env):
    model = dense_tonnx()
    return lambda: model(X, method="encode"), model


@case("ToNNX/mutable-is-an-int", linnx.BridgeTypeError, r"mutable=3",
      r"mutable=\['batch_stats'\]")
def _(env):
    model = dense_tonnx()
    return lambda: model(X, mutable=3), model


@case("ToNNX/mutable-names-a-missing-collection", linnx.MutableCollectionError,
      r"'batch_stat'", r"check the spelling")
def _(env):
    model = dense_tonnx()
    return lambda: model(X, mutable=["batch_stat"]), model


class Counter(nn.Module):
    @nn.compact
    def __call__(self, x):
        count = self.variable("counter", "count", jnp.zeros, (), jnp.int32)
        count.value += 1
        return x


@case("ToNNX/writes-a-collection-not-marked-mutable", linnx.MutableCollectionError,
      r"'counter'", r"mutable=\['counter'\]")
def _(env):
    model = linnx.ToNNX(Counter(), rngs=nnx.Rngs(0)).lazy_init(X)
    return lambda: model(X), model


@case("ToNNX/call-rngs-is-a-string", linnx.BridgeTypeError, r"rngs='dropout'",
      r"rngs=\{'dropout': jax\.random\.key\(1\)\}")
def _(env):
    model = dense_tonnx()
    return lambda: model(X, rngs="dropout"), model


@case("ToNNX/missing-rng-stream", linnx.RngStreamError, r"ToNNX\(DropoutDense\)",
      r"rngs=nnx\.Rngs\(0\)")
def _(env):
    model = linnx.ToNNX(DropoutDense(), rngs=None)
    return lambda: model.lazy_init(X), model


@case("ToNNX/misspelled-attribute", linnx.UnknownMethodError, r"'kernl'",
      r"variable name in \['params'\]")
def _(env):
    model = dense_tonnx()
    return lambda: model.kernl, model


@case("ToNNX/ambiguous-attribute", linnx.AmbiguousNameError, r"layers_0/kernel",
      r"index the collection")
def _(env):
    model = linnx.ToNNX(nn.Sequential([nn.Dense(3), nn.Dense(2)]), rngs=nnx.Rngs(0))
    model.lazy_init(X)
    return lambda: model.kernel, model


class WritesModule(nn.Module):
    @nn.compact
    def __call__(self, x):
        self.variable("module", "v", jnp.zeros, ())
        return x


@case("ToNNX/collection-named-like-an-attribute", linnx.BridgeTypeError,
      r"collection named 'module'", r"rename the collection")
def _(env):
    model = linnx.ToNNX(WritesModule(), rngs=nnx.Rngs(0))
    return lambda: model.lazy_init(X), model


# -- lazy_init --------------------------------------------------------------------------------


@case("lazy_init/a-Linen-class", linnx.BridgeTypeError, r"the class Dense",
      r"build the module first")
def _(env):
    return lambda: linnx.lazy_init(nn.Dense, X)


@case("lazy_init/an-NNX-class", linnx.BridgeTypeError, r"the class Linear",
      r"build the module first")
def _(env):
    return lambda: linnx.lazy_init(nnx.Linear, X)


@case("lazy_init/a-Linen-instance", linnx.BridgeTypeError, r"the Linen module Dense",
      r"wrap it first")
def _(env):
    return lambda: linnx.lazy_init(nn.Dense(4), X)


@case("lazy_init/None", linnx.BridgeTypeError, r"lazy_init\(fn=\.\.\.\)",
      r"lazy_init\(model, x\)")
def _(env):
    return lambda: linnx.lazy_init(None, X)


@case("lazy_init/fails-half-way-and-undoes-the-first-half", linnx.RngStreamError,
      r"ToNNX\(DropoutDense\)", r"rngs=nnx\.Rngs\(0\)")
def _(env):
    # `first` initializes before `second` fails: the whole tree must be as before.
    model = TwoWrappers()
    return lambda: linnx.lazy_init(model, X), model


# -- ToLinen, to_linen, to_linen_class -------------------------------------------------------


@case("ToLinen/nnx_class-is-None", linnx.BridgeTypeError, r"ToLinen\(nnx_class=\.\.\.\)",
      r"ToLinen\(nnx\.Linear, args=\(3, 4\)\)")
def _(env):
    return lambda: linnx.ToLinen(None)


@case("ToLinen/nnx_class-is-an-instance", linnx.BridgeTypeError, r"an instance of Linear",
      r"pass the class and its arguments")
def _(env):
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    return lambda: linnx.ToLinen(layer), layer


@case("ToLinen/nnx_class-is-a-Linen-class", linnx.BridgeTypeError, r"the Linen module Dense",
      r"use the Linen module directly")
def _(env):
    return lambda: linnx.ToLinen(nn.Dense)


@case("ToLinen/args-is-an-int", linnx.BridgeTypeError, r"ToLinen\(args=3\)",
      r"args=\(32, 64\)")
def _(env):
    return lambda: linnx.ToLinen(nnx.Linear, args=3)


@case("ToLinen/kwargs-is-a-list", linnx.BridgeTypeError, r"ToLinen\(kwargs=\[1\]\)",
      r"kwargs=\{'use_bias': False\}")
def _(env):
    return lambda: linnx.ToLinen(nnx.Linear, args=(3, 4), kwargs=[1])


class NoRngs(nnx.Module):
    def __init__(self, n):
        self.w = nnx.Param(jnp.ones(n))


@case("ToLinen/class-takes-no-rngs", linnx.BridgeTypeError, r"NoRngs\.__init__ takes no `rngs`",
      r"skip_rng=True")
def _(env):
    return lambda: linnx.ToLinen(NoRngs, args=(3,))


@case("ToLinen/constructor-arguments-do-not-fit", linnx.BridgeTypeError, r"'out_features'",
      r"pass Linear's constructor arguments")
def _(env):
    return lambda: linnx.ToLinen(nnx.Linear, args=(3,)).init(jax.random.key(0), X)


@case("ToLinen/init-rngs-is-a-string", linnx.BridgeTypeError, r"init\(rngs=\.\.\.\).*got 'abc'",
      r"model\.init\(jax\.random\.key\(0\), x\)")
def _(env):
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.init("abc", X)


@case("ToLinen/init-rngs-dict-with-a-bad-stream", linnx.BridgeTypeError,
      r"the stream 'dropout' is 3", r"'dropout': jax\.random\.key\(1\)")
def _(env):
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.init({"params": jax.random.key(0), "dropout": 3}, X)


@case("ToLinen/init_with_output-rngs-is-None", linnx.BridgeTypeError,
      r"init_with_output\(rngs=\.\.\.\).*got None", r"jax\.random\.key\(0\)")
def _(env):
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.init_with_output(None, X)


@case("ToLinen/apply-variables-is-None", linnx.BridgeTypeError, r"apply\(variables=None\)",
      r"model\.apply\(variables, x\)")
def _(env):
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.apply(None, X)


@case("ToLinen/apply-rngs-is-an-int", linnx.BridgeTypeError, r"apply\(rngs=\.\.\.\).*got 7",
      r"rngs=\{'dropout': jax\.random\.key\(2\)\}")
def _(env):
    variables = tolinen_variables()
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.apply(variables, X, rngs=7), variables


@case("ToLinen/apply-without-the-nnx-collection", linnx.StructureMismatchError,
      r"missing \(1\): nnx/graphdef", r"pass the whole variables dict")
def _(env):
    variables = tolinen_variables()
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.apply({"params": variables["params"]}, X), variables


@case("ToLinen/apply-with-a-missing-leaf", linnx.StructureMismatchError,
      r"missing \(1\): params/kernel", r"variables returned by `init`")
def _(env):
    variables = tolinen_variables()
    broken = {**variables, "params": {"bias": variables["params"]["bias"]}}
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.apply(broken, X), variables, broken


@case("ToLinen/apply-with-a-graphdef-that-is-not-one", linnx.StructureMismatchError,
      r"nnx/graphdef: expected an nnx\.GraphDef, got int", r"pass the whole variables dict")
def _(env):
    variables = tolinen_variables()
    broken = {**variables, "nnx": {"graphdef": 3}}
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.apply(broken, X), variables, broken


@case("ToLinen/apply-unknown-method", linnx.UnknownMethodError, r"'encode'",
      r"check the spelling")
def _(env):
    variables = tolinen_variables()
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.apply(variables, X, method="encode"), variables


@case("ToLinen/apply-unknown-nnx_method", linnx.UnknownMethodError, r"method='encode'",
      r"check the spelling")
def _(env):
    variables = tolinen_variables()
    layer = linnx.ToLinen(nnx.Linear, args=(3, 4))
    return lambda: layer.apply(variables, X, nnx_method="encode"), variables


@case("ToLinen/init-without-a-params-stream", linnx.RngStreamError,
      r"rngs given to this call: none", r"pass the stream to init")
def _(env):
    return lambda: linnx.ToLinen(nnx.Linear, args=(3, 4)).init({}, X)


class Grows(nnx.Module):
    """Adds a variable during its first call: a structure change Linen must be told about."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        if not hasattr(self, "calls"):
            self.calls = nnx.BatchStat(jnp.zeros(()))
        return self.linear(x)


@case("ToLinen/structure-change-without-mutable-nnx", linnx.StructureMismatchError,
      r"Grows changed its structure", r"mutable=\['nnx', \.\.\.\]")
def _(env):
    layer = linnx.ToLinen(Grows)
    variables = layer.init(jax.random.key(0), X)
    return lambda: layer.apply(variables, X), variables


@case("to_linen/an-instance", linnx.BridgeTypeError, r"an instance of Linear",
      r"linnx\.to_linen\(Linear, \*args, \*\*kwargs\)")
def _(env):
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    return lambda: linnx.to_linen(layer), layer


@case("to_linen_class/an-instance", linnx.BridgeTypeError,
      r"to_linen_class\(nnx_class=\.\.\.\).*an instance of Linear", r"pass the class")
def _(env):
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    return lambda: linnx.to_linen_class(layer), layer


@case("to_linen_class/None", linnx.BridgeTypeError, r"to_linen_class\(nnx_class=\.\.\.\)",
      r"ToLinen\(nnx\.Linear")
def _(env):
    return lambda: linnx.to_linen_class(None)


@case("to_linen_class/a-Linen-class", linnx.BridgeTypeError, r"the Linen module Dense",
      r"use the Linen module directly")
def _(env):
    return lambda: linnx.to_linen_class(nn.Dense)


# -- issue 14: lost updates, partition rules, rng messages, to_linen_class keywords --------


class _Unseeded(nnx.Module):
    """An NNX layer whose dropout was built without rngs."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.dropout = nnx.Dropout(0.5)

    def __call__(self, x):
        return self.dropout(self.linear(x))


def _batchnorm_variables():
    model = linnx.to_linen(nnx.BatchNorm, 3)
    return model, model.init(jax.random.key(0), X)


@case("ToLinen/apply-train-batchnorm-without-mutable", linnx.MutableCollectionError,
      r"batch_stats/mean", r"mutable=\['batch_stats'\]")
def _(env):
    model, variables = _batchnorm_variables()
    return lambda: model.apply(variables, X), variables


@case("ToLinen/apply-mutable-typo", linnx.MutableCollectionError,
      r"\['batch_stats'\] is not mutable in this call \(mutable=\['batch_stat'\] names "
      r"'batch_stat', which is not a collection of BatchNorm", r"mutable=\['batch_stats'\]")
def _(env):
    model, variables = _batchnorm_variables()
    return lambda: model.apply(variables, X, mutable=["batch_stat"]), variables


@case("ToLinen/apply-dropout-layer-built-without-rngs", linnx.RngStreamError,
      r"rngs given to this call: \['dropout'\]", r"nnx\.Dropout\(0\.5, rngs=rngs\)")
def _(env):
    model = linnx.to_linen(_Unseeded)
    variables = model.init(jax.random.key(0), X)
    return lambda: model.apply(variables, X, rngs={"dropout": jax.random.key(1)}), variables


@case("ToNNX/logical-partitioning-rules-not-pairs", linnx.ShardingRulesError,
      r"params/bias: sharding rule 0", r"tuple of pairs")
def _(env):
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("out-alias",),
                                        rules=("out-alias", "out"))
    model = linnx.ToNNX(nn.Dense(4, bias_init=init), rngs=nnx.Rngs(0))
    return lambda: linnx.lazy_init(model, X), model


@case("ToNNX/rngs-is-a-key", linnx.BridgeTypeError, r"got a jax\.random\.key",
      r"rngs=nnx\.Rngs\(key\)\.$")
def _(env):
    return lambda: linnx.ToNNX(nn.Dense(4), rngs=jax.random.key(0))


@case("ToNNX/rngs-None-lazy_init", linnx.RngStreamError,
      r"needs the rng stream 'params', but it has no rngs \(rngs=None\)", r"nnx\.Rngs\(0\)")
def _(env):
    model = linnx.ToNNX(nn.Dense(4))
    return lambda: linnx.lazy_init(model, X), model


@case("ToNNX/variable-name-before-lazy_init", linnx.UnknownMethodError, r"'kernel'",
      r"model\.lazy_init\(x\)")
def _(env):
    model = linnx.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0))
    return lambda: model.kernel, model


@case("to_linen_class/base_skip_rng-not-a-bool", linnx.BridgeTypeError,
      r"to_linen_class\(base_skip_rng='yes'\)", r"base_skip_rng=True")
def _(env):
    return lambda: linnx.to_linen_class(nnx.Linear, base_skip_rng="yes")


# -- NNXMeta ----------------------------------------------------------------------------------


@case("NNXMeta/var_type-is-not-a-variable-type", linnx.BridgeTypeError,
      r"NNXMeta\(var_type=<class 'int'>\)", r"NNXMeta\(nnx\.Param, value, \{\}\)")
def _(env):
    return lambda: linnx.NNXMeta(int, jnp.ones(2), {})


@case("NNXMeta/metadata-is-None", linnx.BridgeTypeError, r"NNXMeta\(metadata=None\)",
      r"pass \{\} for none")
def _(env):
    return lambda: linnx.NNXMeta(nnx.Param, jnp.ones(2), None)


@case("NNXMeta/partition-names-not-a-tuple", linnx.BridgeTypeError, r"'sharding': 5",
      r"metadata=\{'sharding': \('embed', None\)\}")
def _(env):
    return lambda: linnx.NNXMeta(nnx.Param, jnp.ones(2), {"sharding": 5})


# -- the collection <-> variable type registry ------------------------------------------------


class Fresh(nnx.Variable):
    pass


@case("registry/name-is-None", linnx.BridgeTypeError, r"name=None", r"e\.g\. 'batch_stats'")
def _(env):
    return lambda: linnx.register_variable_name_type_pair(None, Fresh), REGISTRY


@case("registry/name-is-empty", linnx.BridgeTypeError, r"name=''", r"e\.g\. 'batch_stats'")
def _(env):
    return lambda: linnx.register_variable_name_type_pair("", Fresh), REGISTRY


@case("registry/type-is-int", linnx.BridgeTypeError, r"type=the class int",
      r"class Hostile_fresh\(nnx\.Variable\)")
def _(env):
    return lambda: linnx.register_variable_name_type_pair("hostile_fresh", int), REGISTRY


@case("registry/type-is-an-instance", linnx.BridgeTypeError, r"type=Param\(",
      r"register_variable_name_type_pair\('hostile_fresh'")
def _(env):
    instance = nnx.Param(jnp.zeros(()))
    return (lambda: linnx.register_variable_name_type_pair("hostile_fresh", instance),
            REGISTRY)  # fmt: skip


@case("registry/name-taken-by-another-type", linnx.RegistryConflictError,
      r"'params' is already paired with Param", r"overwrite=True")
def _(env):
    return lambda: linnx.register_variable_name_type_pair("params", nnx.BatchStat), REGISTRY


@case("registry/type-taken-by-another-name", linnx.RegistryConflictError,
      r"Param is already paired with the collection 'params'", r"register a subclass")
def _(env):
    return lambda: linnx.register_variable_name_type_pair("weights", nnx.Param), REGISTRY


@case("registry/decorator-name-is-an-int", linnx.BridgeTypeError, r"name=3",
      r"e\.g\. 'batch_stats'")
def _(env):
    return lambda: linnx.register_variable_name(3)(Fresh), REGISTRY


@case("registry/decorator-on-a-non-variable", linnx.BridgeTypeError, r"type=the class int",
      r"expected a subclass of nnx\.Variable")
def _(env):
    return lambda: linnx.register_variable_name("hostile_fresh")(int), REGISTRY


@case("registry/type_from_name-of-a-list", linnx.BridgeTypeError, r"name=\[\]",
      r"e\.g\. 'batch_stats'")
def _(env):
    return lambda: linnx.variable_type_from_name([]), REGISTRY


@case("registry/type_from_name-of-None", linnx.BridgeTypeError, r"name=None",
      r"e\.g\. 'batch_stats'")
def _(env):
    return lambda: linnx.variable_type_from_name(None), REGISTRY


@case("registry/name_from_type-of-an-instance", linnx.BridgeTypeError, r"type=Param\(",
      r"expected a subclass of nnx\.Variable")
def _(env):
    instance = nnx.Param(jnp.zeros(()))
    return lambda: linnx.variable_name_from_type(instance), REGISTRY


@case("registry/name_from_type-of-a-string", linnx.BridgeTypeError, r"type='params'",
      r"expected a subclass of nnx\.Variable")
def _(env):
    return lambda: linnx.variable_name_from_type("params"), REGISTRY


@case("registry/class-name-is-another-types-collection", linnx.RegistryConflictError,
      r"class name 'params' is already the collection", r"register it under a free name")
def _(env):
    clash = type("params", (nnx.Variable,), {})
    return lambda: linnx.variable_name_from_type(clash), REGISTRY


CASES = table.cases
