"""The config dataclasses are the one source of defaults, and they refuse bad values."""

from __future__ import annotations

import argparse

import pytest

from cavlog_core.config import PRECISIONS, InferenceConfig
from cavlog_core.errors import CavlogError


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, "batch_size=0: must be >= 1"),
    ({"precision": "fp16"}, "precision='fp16': expected one of auto, fp32, bf16"),
    ({"slices": "middle"}, "slices='middle': expected 'brain' or 'central:N'"),
])
def test_inference_config_refuses_bad_values(kwargs, message):
    with pytest.raises(CavlogError, match=message):
        InferenceConfig(**kwargs)


def test_predict_cli_defaults_are_the_inference_config(tmp_path):
    from cavlog_core.cli import predict

    parser = argparse.ArgumentParser()
    predict.add_parser(parser.add_subparsers())
    args = parser.parse_args(["predict", str(tmp_path), str(tmp_path), "--out", str(tmp_path)])
    default = InferenceConfig()
    assert (args.batch_size, args.device, args.precision, args.threshold) == (
        default.batch_size, default.device, default.precision, default.threshold)
    assert default.precision in PRECISIONS
