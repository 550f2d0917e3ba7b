"""Loading of nnip_scale._C: fallback to the torch path, warn-once, build-record check."""

import json
import os
import subprocess
import sys
from pathlib import Path

from nnip_scale.ops import check_build_info

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = r"""
import json, warnings
import torch
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from nnip_scale.ops import available_backends, resolve_backend, scatter_sum
    g = torch.Generator().manual_seed(0)
    src = torch.randn(40, 3, generator=g, dtype=torch.float64)
    index = torch.randint(0, 9, (40,), generator=g)
    a = scatter_sum(src, index, 9)             # auto
    b = scatter_sum(src, index, 9, backend="cueq")
    try:
        scatter_sum(src, index, 9, backend="native")
        err = ""
    except RuntimeError as e:
        err = str(e)
msgs = [str(w.message) for w in caught if "native ops unavailable" in str(w.message)]
ref = torch.zeros(9, 3, dtype=torch.float64).index_add_(0, index, src)
print(json.dumps({"msgs": msgs, "backends": available_backends(),
                  "auto": resolve_backend("auto", "cpu", torch.float64),
                  "equal": bool(torch.equal(a, ref) and torch.equal(b, ref)), "err": err}))
"""


def test_disable_native_falls_back_and_warns_once():
    env = dict(os.environ, NNIP_SCALE_DISABLE_NATIVE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(res["msgs"]) == 1
    assert "disabled by NNIP_SCALE_DISABLE_NATIVE=1" in res["msgs"][0]
    assert "Falling back to the pure-PyTorch path" in res["msgs"][0]
    assert res["backends"][0] == "torch" and "native" not in res["backends"]
    assert res["auto"] == "torch"
    assert res["equal"] is True
    assert "backend='native' unavailable: disabled by NNIP_SCALE_DISABLE_NATIVE=1" in res["err"]


def test_build_info_match_and_mismatch_messages():
    assert check_build_info("2.13.0+cpu", None, False, "2.13.0+cpu", None) is None
    assert check_build_info("2.13.0+cu128", "12.8", True, "2.13.0+cu128", "12.8") is None
    msg = check_build_info("2.12.0+cpu", None, False, "2.13.0+cpu", None)
    assert msg == (
        "nnip_scale._C was built against torch 2.12.0+cpu (no CUDA) but torch 2.13.0+cpu "
        "(no CUDA) is installed; rebuild it with `pip install --no-build-isolation -e .` from the "
        "repository root (`FORCE_CUDA=1 pip install --no-build-isolation -e .` for the CUDA kernels)"
    )
    msg = check_build_info("2.13.0+cu126", "12.6", True, "2.13.0+cu126", "12.8")
    assert msg is not None and "torch 2.13.0+cu126 (CUDA 12.6) but torch 2.13.0+cu126 (CUDA 12.8)" in msg
    # a CPU-only build only cares about the torch version
    assert check_build_info("2.13.0", None, False, "2.13.0", "12.8") is None


_MISMATCH = r"""
import sys, types, warnings
fake = types.ModuleType("nnip_scale._build_info")
fake.TORCH_VERSION, fake.CUDA_VERSION, fake.WITH_CUDA = "1.0.0", None, False
sys.modules["nnip_scale._build_info"] = fake
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch
    from nnip_scale.ops import native_available, scatter_sum
    out = scatter_sum(torch.ones(3, 1), torch.tensor([0, 0, 1]), 2)
print(native_available(), out.squeeze(1).tolist())
print([str(w.message) for w in caught if "native ops unavailable" in str(w.message)][0])
"""


def test_build_info_mismatch_at_import_falls_back_with_rebuild_message():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("NNIP_SCALE_DISABLE_NATIVE", None)
    proc = subprocess.run(
        [sys.executable, "-c", _MISMATCH], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    first, msg = proc.stdout.strip().splitlines()[-2:]
    assert first == "False [2.0, 1.0]"
    assert "built against torch 1.0.0 (no CUDA)" in msg
    assert "rebuild it with `pip install --no-build-isolation -e .`" in msg
