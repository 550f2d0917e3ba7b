"""``nnip-scale predict``: write the model's predictions on new structures as extxyz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from nnip_scale.atomic_io import AtomicFile
from nnip_scale.data import keys as K


class PredictionWriter(BasePredictionWriter):
    """Writes every predicted structure to an extxyz file, in the order of the data: positions,
    cell and pbc as read, the predicted ``energy`` (eV), ``forces`` (eV/Å), per-atom ``energies``
    and, where the model computes it, ``stress`` (eV/Å³), as ASE single-point results, with
    ``info["source"]`` / ``info["record"]`` naming the input file and record.

    Args:
        output: the file; default ``<log dir>/predictions.extxyz`` (beside the run's logs; with
            ``logger: false``, ``<default_root_dir>/predictions.extxyz``). Under DDP each rank
            writes ``predictions.rank<r>.extxyz``. Written to a temporary file and renamed at the
            end, so an interrupted prediction leaves no half-written file.
    """

    def __init__(self, output: str | None = None):
        super().__init__(write_interval="batch")
        self.output = output
        self.path: Path | None = None
        self._out: AtomicFile | None = None
        self.count = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        if self.output:
            path = Path(self.output)
        else:
            root = trainer.log_dir if trainer.logger is not None and trainer.log_dir else trainer.default_root_dir
            path = Path(root) / "predictions.extxyz"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._out is not None:  # a previous prediction that neither ended nor failed
            self._out.discard()
        self.path, self._out, self.count = path, AtomicFile(path), 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        dm = trainer.datamodule
        data = dm.predict_dataset.data if hasattr(dm, "predict_dataset") else None
        counts = batch[K.NUM_ATOMS].tolist()
        bounds = np.concatenate([[0], np.cumsum(counts)])
        numpy = {k: v.detach().cpu().double().numpy() for k, v in prediction.items()}
        numbers = batch[K.ATOMIC_NUMBERS].cpu().numpy()
        positions = batch[K.POSITIONS].detach().cpu().double().numpy()
        frames = []
        for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            pbc = batch[K.PBC][s].cpu().numpy()
            atoms = Atoms(numbers=numbers[a:b], positions=positions[a:b],
                          cell=batch[K.CELL][s].detach().cpu().double().numpy() if pbc.any() else None, pbc=pbc)
            results = {"energy": float(numpy["energy"][s]), "forces": numpy["forces"][a:b]}
            if "energies" in numpy:
                results["energies"] = numpy["energies"][a:b]
            if "stress" in numpy and pbc.any():
                results["stress"] = numpy["stress"][s]
            atoms.calc = SinglePointCalculator(atoms, **results)
            if data is not None and K.STRUCTURE_INDEX in batch:
                i = int(batch[K.STRUCTURE_INDEX][s])
                atoms.info["source"] = str(data.sources[int(data.source_id[i])])
                atoms.info["record"] = int(data.record_index[i])
            frames.append(atoms)
        with open(self._out.tmp, "a") as fh:
            write(fh, frames, format="extxyz")
        self.count += len(frames)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """An interrupted prediction leaves neither the output nor its temporary file."""
        if self._out is not None:
            self._out.discard()
            self._out = None

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._out is not None:
            self._out.commit()
            self._out = None
            rank_zero_info(f"nnip-scale predict: wrote {self.count} structures with predicted energy and forces "
                           f"to {self.path}")
