"""SLURM: one sbatch array task per unfinished run; each task trains its run with Lightning's own
SLURM support (one process per GPU, DDP across the node's GPUs and, with nodes > 1, across nodes)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from nnip_scale.study.plan import Study
from nnip_scale.study.runner import is_done


def sbatch_script(study: Study, study_file: str, gpus_per_node: int = 4, nodes: int = 1, cpus_per_gpu: int = 8,
                  time: str = "24:00:00", partition: str | None = None, account: str | None = None,
                  extra: list[str] | None = None) -> str:
    """An sbatch array script over the study's unfinished runs (array index = position in the plan)."""
    todo = [k for k, r in enumerate(study.runs) if not is_done(r)]
    if not todo:
        raise ValueError(f"{study_file}: every run of the study is finished; nothing to submit")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=nnip-{study.name}",
        f"#SBATCH --array={','.join(map(str, todo))}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks-per-node={gpus_per_node}",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --cpus-per-task={cpus_per_gpu}",
        f"#SBATCH --time={time}",
        f"#SBATCH --output={study.folder}/slurm/%A_%a.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    lines += [f"#SBATCH {e}" for e in extra or []]
    cmd = [sys.executable, "-m", "nnip_scale.cli", "study", "--config", str(Path(study_file).resolve()),
           "--output", str(study.folder), "--only", "$SLURM_ARRAY_TASK_ID",
           f"--devices-per-run={gpus_per_node}", f"--nodes-per-run={nodes}"]
    lines += [
        "",
        "# one task per GPU: Lightning reads SLURM_NTASKS/SLURM_PROCID and sets up DDP itself",
        f"cd {shlex.quote(os.getcwd())}",
        "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK",
        "srun " + " ".join(c if c.startswith("$") else shlex.quote(c) for c in cmd),
        "",
    ]
    return "\n".join(lines)
