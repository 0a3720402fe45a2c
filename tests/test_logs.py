"""A job's log: what the job printed and warned, without the third-party noise of every run."""

import logging
import warnings

import pytest

from fastscan.logs import rule_logging


def test_job_log_keeps_real_warnings_and_drops_known_third_party_noise(tmp_path):
    import torch

    path = tmp_path / "logs" / "job.log"
    filters = list(warnings.filters)
    with rule_logging(path):
        # The pinned torch's own deprecations, raised the way fastai's layers raise them.
        torch.nn.utils.weight_norm(torch.nn.Conv2d(1, 1, 1))
        torch.jit.script(torch.nn.Linear(2, 2))
        # fastai's GANTrainer sets these learner attributes by design (fastai/callback/core.py).
        warnings.warn(
            "You are shadowing an attribute (gen_mode) that exists in the learner. Use `self.learn.gen_mode` to avoid this", UserWarning, stacklevel=1
        )
        warnings.warn("LR frames hold 12 saturated pixels", UserWarning, stacklevel=1)
        logging.getLogger("fastscan.test").info("a line of the job")
        print("printed by the job")
    text = path.read_text()
    assert "LR frames hold 12 saturated pixels" in text and "a line of the job" in text and "printed by the job" in text
    assert "weight_norm" not in text and "jit" not in text and "shadowing" not in text
    # Outside the job, the process's warning filters are as they were: nothing stays silenced.
    assert warnings.filters == filters


def test_a_failing_job_logs_its_traceback(tmp_path):
    path = tmp_path / "job.log"
    with pytest.raises(ValueError, match="bad input"), rule_logging(path):
        raise ValueError("bad input")
    assert "job failed" in path.read_text() and "ValueError: bad input" in path.read_text()
