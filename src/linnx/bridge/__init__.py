"""The bridge between Flax Linen and Flax NNX modules."""

from ._meta import NNXMeta as NNXMeta
from ._registry import register_variable_name as register_variable_name
from ._registry import register_variable_name_type_pair as register_variable_name_type_pair
from ._registry import registered_pairs as registered_pairs
from ._registry import variable_name_from_type as variable_name_from_type
from ._registry import variable_type_from_name as variable_type_from_name
from ._to_linen import ToLinen as ToLinen
from ._to_linen import to_linen as to_linen
from ._to_linen import to_linen_class as to_linen_class
from ._to_nnx import ToNNX as ToNNX
from ._to_nnx import lazy_init as lazy_init
