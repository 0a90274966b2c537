"""The names the README promises are importable from the top-level package."""

import subprocess
import sys

import cavlog_core

PROMISED = ("ResNetVAE", "extended_log_barrier", "fit", "predict_volume", "pixel_metrics",
            "load_case", "find_cases", "PreprocessConfig", "ModelConfig", "TrainConfig",
            "RunConfig", "SynthConfig", "drain", "relay", "Progress", "run_evaluate")


def test_promised_names_resolve():
    for name in PROMISED:
        assert callable(getattr(cavlog_core, name)), name
    assert set(PROMISED) <= set(dir(cavlog_core))


def test_plain_import_does_not_load_torch():
    code = "import sys, cavlog_core; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_lists_every_subcommand(capsys):
    from cavlog_core.cli import SUBCOMMANDS, main

    try:
        main(["--help"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out
