"""Hot ops of nnip-scale: one function per op with a ``backend`` argument.

``backend``: ``auto`` (fastest available), ``torch`` (reference), ``native`` (nnip_scale._C),
``pyg`` (torch-scatter), ``cueq`` (cuequivariance-torch). One resolver decides what runs
(``registry.resolve_backend``; an explicit backend that cannot serve a call raises; docs/ops.md).
"""

from nnip_scale.ops._native import check_build_info, native_available
from nnip_scale.ops.equivariant import channelwise_tp_scatter, spherical_harmonics, symmetric_contraction  # noqa: F401
from nnip_scale.ops.registry import (  # noqa: F401
    BACKENDS,
    available_backends,
    backend_table,
    flops,
    get_op,
    native_supports,
    per_op_backend,
    registered_ops,
    resolve_backend,
    why_not,
)
from nnip_scale.ops.scatter import gather_rows, scatter_sum
from nnip_scale.ops.so2 import (  # noqa: F401
    so2_block_rows,
    so2_compact_wigner,
    so2_conv,
    so2_layout,
    so2_num_blocks,
    so2_rotate_in,
    so2_rotate_out_scatter,
)
from nnip_scale.ops.triplets import basis_scatter, interaction_index, interaction_sizes, reverse_edges  # noqa: F401

__all__ = [
    "BACKENDS",
    "available_backends",
    "check_build_info",
    "flops",
    "gather_rows",
    "get_op",
    "native_available",
    "native_supports",
    "registered_ops",
    "resolve_backend",
    "scatter_sum",
]
