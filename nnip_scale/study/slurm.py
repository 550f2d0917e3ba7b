"""SLURM: one sbatch array task per unfinished run; each task trains its run with Lightning's own
SLURM support (one process per GPU, DDP across the node's GPUs and, with nodes > 1, across nodes)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from nnip_scale.study.plan import Study
from nnip_scale.study.runner import is_done


def sbatch_script(study: Study, study_file: str, gpus_per_node: int = 4, nodes: int = 1, cpus_per_task: int = 8,
                  time: str = "24:00:00", partition: str | None = None, account: str | None = None,
                  extra: list[str] | None = None, signal_seconds: int = 120) -> str:
    """An sbatch array script over the study's unfinished runs.

    Tasks address runs by id (a bash array in the script), not by position in the plan, so editing
    the study file after writing the script cannot hand a task another run (a run no longer in the
    plan fails with a clear error). SLURM sends SIGUSR1 ``signal_seconds`` before the time limit:
    Lightning's SLURM support then saves ``hpc_ckpt_<n>.ckpt`` in the run folder and requeues the
    task, which resumes from it (``runner.run_args`` takes the newest checkpoint)."""
    # the grid's runs wait while their LR sweep runs: then the script holds the sweep's runs only
    todo = [r.run_id for r in study.all_runs if not is_done(r) and not r.pending]
    if not todo:
        raise ValueError(f"{study_file}: every run of the study is finished; nothing to submit")
    if cpus_per_task < 1 or gpus_per_node < 1 or nodes < 1:
        raise ValueError(f"cpus_per_task, gpus_per_node and nodes must be >= 1, got {cpus_per_task}, "
                         f"{gpus_per_node}, {nodes}")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=nnip-{study.name}",
        f"#SBATCH --array=0-{len(todo) - 1}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks-per-node={gpus_per_node}",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        f"#SBATCH --time={time}",
        f"#SBATCH --signal=SIGUSR1@{int(signal_seconds)}",
        "#SBATCH --requeue",
        f"#SBATCH --output={study.folder}/slurm/%A_%a.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    lines += [f"#SBATCH {e}" for e in extra or []]
    cmd = [sys.executable, "-m", "nnip_scale.cli", "study", "--config", str(Path(study_file).resolve()),
           "--output", str(study.folder), "--only", "$RUN",
           f"--devices-per-run={gpus_per_node}", f"--nodes-per-run={nodes}"]
    lines += [
        "",
        "# the unfinished runs when this script was written, by id (array task k trains RUNS[k])",
        "RUNS=(" + " ".join(shlex.quote(r) for r in todo) + ")",
        'RUN="${RUNS[$SLURM_ARRAY_TASK_ID]}"',
        "",
        "# one task per GPU: Lightning reads SLURM_NTASKS/SLURM_PROCID and sets up DDP itself; on",
        "# SIGUSR1 (before the time limit) it saves hpc_ckpt_<n>.ckpt and requeues this task",
        f"cd {shlex.quote(os.getcwd())}",
        "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK",
        "srun " + " ".join(c if c.startswith("$") else shlex.quote(c) for c in cmd),
        "",
    ]
    return "\n".join(lines)
