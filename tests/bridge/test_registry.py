"""The registry between Linen collection names and NNX variable types."""

import itertools

import jax.numpy as jnp
import pytest
from flax import linen as nn
from flax import nnx
from flax.nnx import variablelib

import linnx
from linnx.bridge import _registry

_fresh = itertools.count()


@pytest.fixture
def registry():
    """Restores the global registry after the test, whatever the test registered."""
    with _registry.scoped():
        yield


def fresh_name(prefix="coll"):
    """A collection name no other test (or doctest) uses."""
    return f"test_registry_{prefix}_{next(_fresh)}"


def fresh_type(name="Thing", base=nnx.Variable):
    return type(f"{name}{next(_fresh)}", (base,), {})


# Flax's own NNX registry names the built-in collections; linnx must agree with it. The
# other Flax variable types have no Linen collection and go by their class name.
FLAX_BUILTINS = sorted(variablelib.VariableTypeCache.items())
BY_CLASS_NAME = [nnx.LoRAParam, nnx.RngKey, nnx.RngCount, nnx.RngState, nnx.OptState]


@pytest.mark.parametrize("name,typ", FLAX_BUILTINS, ids=[n for n, _ in FLAX_BUILTINS])
def test_flax_builtin_collections_are_preregistered(name, typ):
    assert linnx.variable_type_from_name(name) is typ
    assert linnx.variable_name_from_type(typ) == name
    assert linnx.registered_pairs()[name] is typ


def test_issue_pairs_are_preregistered():
    expected = {
        "params": nnx.Param,
        "batch_stats": nnx.BatchStat,
        "intermediates": nnx.Intermediate,
        "cache": nnx.Cache,
        "perturbations": nnx.Perturbation,
    }
    pairs = linnx.registered_pairs()
    assert {name: pairs[name] for name in expected} == expected


@pytest.mark.parametrize("typ", BY_CLASS_NAME, ids=lambda t: t.__name__)
def test_lora_rng_and_optimizer_types_go_by_class_name(typ):
    assert linnx.variable_name_from_type(typ) == typ.__name__
    assert linnx.variable_type_from_name(typ.__name__) is typ


def test_linen_perturb_collection_becomes_perturbation():
    class Perturbed(nn.Module):
        @nn.compact
        def __call__(self, x):
            return self.perturb("h", nn.Dense(2)(x))

    model = linnx.ToNNX(Perturbed(), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
    assert "perturbations" in model.linen_collections
    assert type(model.perturbations["h"]) is nnx.Perturbation


def test_unknown_collection_gets_a_type_named_after_it(registry):
    name = fresh_name()
    typ = linnx.variable_type_from_name(name)
    assert typ.__name__ == name
    assert issubclass(typ, nnx.Variable) and typ is not nnx.Variable
    assert linnx.variable_type_from_name(name) is typ  # identical every time
    assert linnx.variable_name_from_type(typ) == name  # and maps back
    assert linnx.registered_pairs()[name] is typ


def test_unknown_type_goes_to_collection_named_after_it(registry):
    typ = fresh_type("Temperature")
    name = linnx.variable_name_from_type(typ)
    assert name == typ.__name__
    assert linnx.variable_type_from_name(name) is typ
    assert linnx.variable_name_from_type(typ) == name


def test_lookup_by_type_is_exact_not_by_mro(registry):
    sub = fresh_type("MyParam", base=nnx.Param)
    assert linnx.variable_name_from_type(sub) == sub.__name__
    assert linnx.variable_name_from_type(nnx.Param) == "params"


def test_register_pairs_both_ways(registry):
    name, typ = fresh_name(), fresh_type()
    assert linnx.register_variable_name_type_pair(name, typ) is None
    assert linnx.variable_type_from_name(name) is typ
    assert linnx.variable_name_from_type(typ) == name
    linnx.register_variable_name_type_pair(name, typ)  # the same pair again is fine


def test_registered_type_is_used_by_to_nnx(registry):
    name, typ = fresh_name(), fresh_type("Count")
    linnx.register_variable_name_type_pair(name, typ)

    class Counting(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.variable(name, "n", lambda: jnp.zeros((), jnp.int32))
            return x

    model = linnx.ToNNX(Counting(), rngs=nnx.Rngs(0)).lazy_init(jnp.ones(2))
    assert type(getattr(model, name)["n"]) is typ
    assert list(nnx.state(model, typ)) == [name]


def test_conflicting_name_raises_unless_overwrite(registry):
    name, first, second = fresh_name(), fresh_type(), fresh_type()
    linnx.register_variable_name_type_pair(name, first)
    with pytest.raises(linnx.RegistryConflictError, match=rf"'{name}' is already paired") as e:
        linnx.register_variable_name_type_pair(name, second)
    assert "overwrite=True" in str(e.value)
    assert linnx.variable_type_from_name(name) is first  # unchanged

    linnx.register_variable_name_type_pair(name, second, overwrite=True)
    assert linnx.variable_type_from_name(name) is second
    assert linnx.variable_name_from_type(second) == name


def test_conflicting_type_raises_unless_overwrite(registry):
    typ, first, second = fresh_type(), fresh_name(), fresh_name()
    linnx.register_variable_name_type_pair(first, typ)
    with pytest.raises(linnx.RegistryConflictError, match="already paired with the collection"):
        linnx.register_variable_name_type_pair(second, typ)
    assert linnx.variable_name_from_type(typ) == first

    linnx.register_variable_name_type_pair(second, typ, overwrite=True)
    assert linnx.variable_name_from_type(typ) == second
    assert linnx.variable_type_from_name(second) is typ
    assert first not in linnx.registered_pairs()  # the type moved; its old name forgot it


def test_builtin_pairs_are_protected(registry):
    with pytest.raises(linnx.RegistryConflictError, match="'params' is already paired with Param"):
        linnx.register_variable_name_type_pair("params", nnx.BatchStat)
    assert linnx.variable_type_from_name("params") is nnx.Param


def test_explicit_registration_replaces_an_implicit_type(registry):
    name = fresh_name()
    auto = linnx.variable_type_from_name(name)
    explicit = fresh_type()
    linnx.register_variable_name_type_pair(name, explicit)  # no overwrite needed
    assert linnx.variable_type_from_name(name) is explicit
    # Variables created earlier with the implicit type keep their collection.
    assert linnx.variable_name_from_type(auto) == name


def test_register_variable_name_alias(registry):
    name, typ = fresh_name(), fresh_type()
    assert linnx.register_variable_name(name, typ) is typ
    assert linnx.variable_type_from_name(name) is typ
    with pytest.raises(linnx.RegistryConflictError):
        linnx.register_variable_name(name, fresh_type())


def test_register_variable_name_as_decorator(registry):
    name = fresh_name()

    @linnx.register_variable_name(name)
    class Decorated(nnx.Variable):
        pass

    assert linnx.variable_type_from_name(name) is Decorated
    assert linnx.variable_name_from_type(Decorated) == name


@pytest.mark.parametrize(
    "name,typ,match",
    [
        ("", nnx.Param, "non-empty string"),
        (3, nnx.Param, "non-empty string"),
        ("x", int, "expected a subclass of nnx.Variable"),
        ("x", nnx.Param(jnp.zeros(())), "expected a subclass of nnx.Variable"),
    ],
    ids=["empty-name", "int-name", "not-a-variable-class", "an-instance"],
)
def test_bad_registration_is_a_type_error(registry, name, typ, match):
    with pytest.raises(linnx.BridgeTypeError, match=match):
        linnx.register_variable_name_type_pair(name, typ)


def test_scoped_undoes_explicit_and_implicit_pairs():
    before = linnx.registered_pairs()
    explicit, implicit_name, implicit_type = fresh_type(), fresh_name(), fresh_type("Implicit")
    with _registry.scoped():
        linnx.register_variable_name_type_pair(fresh_name(), explicit)
        linnx.variable_type_from_name(implicit_name)
        assert linnx.variable_name_from_type(implicit_type) == implicit_type.__name__
        linnx.register_variable_name_type_pair("params", explicit, overwrite=True)
        assert linnx.variable_type_from_name("params") is explicit
    assert linnx.registered_pairs() == before
    assert linnx.variable_type_from_name("params") is nnx.Param
    assert linnx.variable_name_from_type(nnx.Param) == "params"


def test_scoped_restores_after_an_error():
    name = fresh_name()
    with pytest.raises(KeyError), _registry.scoped():
        linnx.register_variable_name_type_pair(name, fresh_type())
        raise KeyError(name)
    assert name not in linnx.registered_pairs()
