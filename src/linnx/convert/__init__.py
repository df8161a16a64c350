"""Linen source code in, idiomatic NNX source code out, proven equal on examples.

``convert_source(text, examples)`` / ``convert_file(src, dst, examples=...)`` rewrite every
Linen module class that an example reaches into an ``nnx.Module`` class of the same name (a
LibCST rewrite: comments and formatting of everything else survive), move the weights with
the converter's own path map and compare both models on each example. The ``linnx convert``
command does the same from the shell; ``write_html(result, path)`` (``--html``) renders the
report as a page with the Linen and NNX code of each class side by side.
"""

from ._api import ConversionResult as ConversionResult
from ._api import ConvertedClass as ConvertedClass
from ._api import convert_file as convert_file
from ._api import convert_source as convert_source
from ._api import paths_file as paths_file
from ._errors import ConvertError as ConvertError
from ._errors import ExampleError as ExampleError
from ._errors import OutputPathError as OutputPathError
from ._errors import SourceSyntaxError as SourceSyntaxError
from ._errors import UnknownLayerError as UnknownLayerError
from ._html import render_html as render_html
from ._html import write_html as write_html
from ._layer import ConvertedLayer as ConvertedLayer
from ._rewrite import Kept as Kept
from ._verify import ExampleCheck as ExampleCheck
