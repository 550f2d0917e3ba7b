"""The keys of the batch dict (docs/conventions.md, "The batch"): one name per key, with its dtype
and shape, so the builder (:func:`nnip_scale.data.batching.build_batch`), the training layer and
the tests spell each key once. ``A`` atoms, ``S`` structures, ``E`` edges.

Use as ``from nnip_scale.data import keys as K`` and ``batch[K.POSITIONS]``. The model outputs
share three of the names (:data:`ENERGY` [S], :data:`FORCES` [A,3], :data:`STRESS` [S,3,3]) and add
:data:`ENERGIES` (per-atom energies, [A]). Plain strings: a batch stays a plain ``dict``.
"""

from typing import Final

# --- inputs (every batch)
ATOMIC_NUMBERS: Final[str] = "atomic_numbers"  # int64 [A]
POSITIONS: Final[str] = "positions"  # float [A,3], Å
CELL: Final[str] = "cell"  # float [S,3,3], rows are lattice vectors; zeros for molecules
PBC: Final[str] = "pbc"  # bool [S,3]
BATCH: Final[str] = "batch"  # int64 [A], structure of each atom, sorted ascending
NUM_ATOMS: Final[str] = "num_atoms"  # int64 [S]
EDGE_INDEX: Final[str] = "edge_index"  # int64 [2,E], row 0 centre i, row 1 neighbour j
EDGE_SHIFT: Final[str] = "edge_shift"  # float [E,3], integer cell shifts: r_ij = pos[j] - pos[i] + S @ cell
# the edge layout: build_batch sorts the edges by receiver (EDGE_INDEX[0] ascending, stable) and stores
EDGE_RECEIVER_PTR: Final[str] = "edge_receiver_ptr"  # int64 [A+1], edges of atom i: ptr[i]:ptr[i+1]
EDGE_SENDER_ORDER: Final[str] = "edge_sender_order"  # int64 [E], edges by ascending EDGE_INDEX[1], stable

# --- labels and per-structure records (present in data batches; the calculator's batch has none)
ENERGY: Final[str] = "energy"  # float [S], total eV
FORCES: Final[str] = "forces"  # float [A,3], eV/Å
STRESS: Final[str] = "stress"  # float [S,3,3], eV/Å³; only when every structure of the batch has one
CHARGE: Final[str] = "charge"  # int64 [S]
SPIN: Final[str] = "spin"  # int64 [S], multiplicity 2S+1
STRUCTURE_INDEX: Final[str] = "structure_index"  # int64 [S], index of the structure in its dataset

# --- sizes as plain Python ints (known without a device sync)
N_ATOMS: Final[str] = "n_atoms"
N_STRUCTURES: Final[str] = "n_structures"
N_EDGES: Final[str] = "n_edges"

# --- model outputs only
ENERGIES: Final[str] = "energies"  # float [A], per-atom energies (eV)

#: tensors with one row per atom / per structure / per edge (slicing a batch by structures uses these)
PER_ATOM: Final[tuple[str, ...]] = (ATOMIC_NUMBERS, POSITIONS, BATCH, FORCES)
PER_STRUCTURE: Final[tuple[str, ...]] = (CELL, PBC, NUM_ATOMS, ENERGY, STRESS, CHARGE, SPIN, STRUCTURE_INDEX)
PER_EDGE: Final[tuple[str, ...]] = (EDGE_INDEX, EDGE_SHIFT)  # EDGE_INDEX along its second axis
#: derived from EDGE_INDEX (batching.edge_layout): recomputed, never sliced, when the edges change
EDGE_LAYOUT: Final[tuple[str, ...]] = (EDGE_RECEIVER_PTR, EDGE_SENDER_ORDER)
SIZES: Final[tuple[str, ...]] = (N_ATOMS, N_STRUCTURES, N_EDGES)
