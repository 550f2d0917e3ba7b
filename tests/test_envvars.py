"""nnip_scale.envvars.environment: set inside the block, restored (or removed) after, also on error."""

import os

import pytest

from nnip_scale.envvars import environment


def test_environment_sets_and_restores(monkeypatch):
    monkeypatch.setenv("NNIP_TEST_SET", "before")
    monkeypatch.delenv("NNIP_TEST_UNSET", raising=False)
    with environment({"NNIP_TEST_SET": "1", "NNIP_TEST_UNSET": "2"}):
        assert os.environ["NNIP_TEST_SET"] == "1" and os.environ["NNIP_TEST_UNSET"] == "2"
    assert os.environ["NNIP_TEST_SET"] == "before" and "NNIP_TEST_UNSET" not in os.environ
    with pytest.raises(RuntimeError), environment({"NNIP_TEST_SET": "3"}):
        raise RuntimeError("inside")
    assert os.environ["NNIP_TEST_SET"] == "before"
