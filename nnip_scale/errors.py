"""The console script's error policy, shared by ``nnip_scale.cli`` and the study's in-process runs.

Light on purpose (no torch, no Lightning): ``nnip-scale data`` and ``nnip-scale study`` start fast.
"""

import os
import sys


def _one_line(err: BaseException) -> str:
    """An error message on one line (nested jsonargparse messages are indented blocks)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def run_guarded(cmd: str, fn) -> int:
    """``fn()`` with the console script's error policy: the project's own errors (bad data, model,
    checkpoint, study or scaling input: ``ValueError`` and its subclasses, missing files) end as one
    line, ``nnip-scale <cmd>: error: <message>``, with exit code 2; ``NNIP_SCALE_DEBUG=1`` re-raises
    them with the traceback. Ctrl-C ends with exit code 130 and says how to resume."""
    try:
        return fn()
    except KeyboardInterrupt:
        resume = " — rerun the same command to resume" if cmd in ("fit", "study") else ""
        sys.stderr.write(f"nnip-scale {cmd}: interrupted{resume}\n")
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        if os.environ.get("NNIP_SCALE_DEBUG", "") not in ("", "0"):
            raise
        sys.stderr.write(f"nnip-scale {cmd}: error: {_one_line(err)}\n"
                         f"(NNIP_SCALE_DEBUG=1 shows the traceback)\n")
        return 2
