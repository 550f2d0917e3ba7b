"""Studies: a grid of training runs (architecture × width × data budget × seed), run locally or on
SLURM, resumable. See docs/study.md."""

from nnip_scale.study.plan import RunSpec, Study, StudyError, load_study
from nnip_scale.study.runner import execute, is_done, ledger_path, ledger_rows, run_local

__all__ = ["RunSpec", "Study", "StudyError", "execute", "is_done", "ledger_path", "ledger_rows", "load_study", "run_local"]
