"""Converted corpus models train like their Linen originals, step for step."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from linnx import convert

from ._train import example_models, train_both

CORPUS = Path(__file__).parent / "corpus"


@pytest.mark.parametrize("stem", ["transformer_encoder", "resnet", "cnn_mnist", "sown_features"])
def test_a_converted_corpus_model_trains_like_the_linen_one(stem, tmp_path):
    source = (CORPUS / f"{stem}.py").read_text()
    example = re.findall(r"^# example: (.*)$", source, re.M)[0]
    result = convert.convert_source(source, [example], path=f"{stem}.py")
    assert result.ok, result.report()
    linen_model, nnx_model, args, lkw, nkw = example_models(
        source, result, example, tmp_path, stem=stem
    )
    linen_losses, nnx_losses = train_both(
        linen_model, nnx_model, result.path_map, args, linen_kwargs=lkw, nnx_kwargs=nkw
    )
    assert linen_losses[0] != linen_losses[-1]  # it did train
    np.testing.assert_allclose(nnx_losses, linen_losses, rtol=1e-5)
