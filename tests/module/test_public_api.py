"""The documented names of ``linnx.module`` import, and show their public path."""

import importlib

import linnx
import linnx.module as lm

DOCUMENTED = [
    "Module",
    "compact",
    "functional",
    "Functional",
    "NameInUseError",
    "ModuleDefinitionError",
    "nn",
]
LAYERS = ["Dense", "Dropout", "BatchNorm", "LayerNorm"]


def test_documented_names_are_importable_with_public_paths():
    module = importlib.import_module("linnx.module")
    for name in DOCUMENTED:
        obj = getattr(module, name)
        if name != "nn":
            assert obj.__module__ == "linnx.module", name
    for name in LAYERS:
        layer = getattr(lm.nn, name)
        assert issubclass(layer, lm.Module)
        assert layer.__module__ == "linnx.module.nn"


def test_public_module_only_re_exports():
    assert {n for n in vars(lm) if not n.startswith("_")} == set(DOCUMENTED)


def test_the_module_is_an_nnx_module_and_lazy_init_is_the_bridges():
    from flax import nnx

    assert issubclass(lm.Module, nnx.Module)
    assert lm.Module.lazy_init.__doc__ and callable(linnx.lazy_init)


def test_linnx_nn_is_the_linen_style_layers_the_docs_name():
    # docs/linen_style_modules.md and the error that replaces an inline Linen layer both say
    # `linnx.nn.Dense(...)`; it must be the same module as `linnx.module.nn`.
    assert linnx.nn is lm.nn
    assert linnx.nn.Dense is lm.nn.Dense
