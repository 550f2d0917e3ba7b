"""``nnip-scale predict``: write the model's predictions on new structures as extxyz."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


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
        self._tmp: Path | None = None
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
        self.path, self._tmp, self.count = path, path.with_name(path.name + ".tmp"), 0
        self._tmp.write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        dm = trainer.datamodule
        data = dm.predict_dataset.data if hasattr(dm, "predict_dataset") else None
        counts = batch["num_atoms"].tolist()
        bounds = np.concatenate([[0], np.cumsum(counts)])
        numpy = {k: v.detach().cpu().double().numpy() for k, v in prediction.items()}
        numbers = batch["atomic_numbers"].cpu().numpy()
        positions = batch["positions"].detach().cpu().double().numpy()
        frames = []
        for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            pbc = batch["pbc"][s].cpu().numpy()
            atoms = Atoms(numbers=numbers[a:b], positions=positions[a:b],
                          cell=batch["cell"][s].detach().cpu().double().numpy() if pbc.any() else None, pbc=pbc)
            results = {"energy": float(numpy["energy"][s]), "forces": numpy["forces"][a:b]}
            if "energies" in numpy:
                results["energies"] = numpy["energies"][a:b]
            if "stress" in numpy and pbc.any():
                results["stress"] = numpy["stress"][s]
            atoms.calc = SinglePointCalculator(atoms, **results)
            if data is not None and "structure_index" in batch:
                i = int(batch["structure_index"][s])
                atoms.info["source"] = str(data.sources[int(data.source_id[i])])
                atoms.info["record"] = int(data.record_index[i])
            frames.append(atoms)
        with open(self._tmp, "a") as fh:
            write(fh, frames, format="extxyz")
        self.count += len(frames)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """An interrupted prediction leaves neither the output nor its temporary file."""
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._tmp is not None and self._tmp.exists():
            os.replace(self._tmp, self.path)
            rank_zero_info(f"nnip-scale predict: wrote {self.count} structures with predicted energy and forces "
                           f"to {self.path}")
