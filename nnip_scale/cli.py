"""The ``nnip-scale`` console script.

``nnip-scale fit|validate|test|predict`` are LightningCLI subcommands (``--config FILE`` repeatable,
dotted overrides such as ``--model.backbone.init_args.width 128``); ``nnip-scale data ...``
generates and checks the built-in datasets.
"""

import os
import sys

# Large CPU tensors (edge features, their gradients) are allocated fresh every step; backing them
# with transparent huge pages avoids most first-touch page faults, which dominate the backward of
# message aggregation on CPU (benchmarks/RESULTS.md: ~4x faster). torch reads this at its first
# large allocation, so it is set before torch is used; export THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

USAGE = """usage: nnip-scale {fit,validate,test,predict,data,study} ...

  fit | validate | test | predict   LightningCLI subcommands: --config FILE (repeatable), dotted
                                    overrides, e.g. nnip-scale fit --config configs/quickstart.yaml
                                    (nnip-scale fit --help lists every option)
  data                              built-in datasets: nnip-scale data --help
  study                             a grid of runs, local or SLURM, resumable: nnip-scale study --help
"""

from nnip_scale.errors import run_guarded  # noqa: E402  (light: no torch, no Lightning)


def __getattr__(name: str):
    """``nnip_scale.cli.build_cli`` / ``TRAINER_DEFAULTS``, from ``nnip_scale.training.lightning_cli``
    on first use (importing Lightning here would slow ``nnip-scale data`` and ``study`` down)."""
    if name in ("build_cli", "TRAINER_DEFAULTS"):
        from nnip_scale.training import lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dispatch(args: list[str], from_argv: bool) -> int:
    if args[0] == "data":
        from nnip_scale.data.generate.cli import main as data_main

        return data_main(args[1:])
    if args[0] == "study":
        from nnip_scale.study.cli import main as study_main

        return study_main(args[1:])
    from nnip_scale.training.lightning_cli import build_cli

    # from the command line LightningCLI reads sys.argv itself (and DDP relaunches the ranks with it)
    build_cli(None if from_argv else args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The console script. The project's own errors (bad data, model, checkpoint, study or
    scaling input: ``ValueError`` and its subclasses, missing files) end as one line,
    ``nnip-scale <cmd>: error: <message>``, with exit code 2; ``NNIP_SCALE_DEBUG=1`` re-raises them
    with the traceback. Ctrl-C ends with exit code 130 and says how to resume."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    return run_guarded(args[0], lambda: _dispatch(args, from_argv=argv is None))


if __name__ == "__main__":
    sys.exit(main())
