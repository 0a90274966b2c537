"""Every command of the README's "Command line" block runs, on a tiny synthetic dataset, and
so does its Python API example.

The commands are read from README.md itself, so an example that drifts from the CLI fails here.
Paths are moved into ``tmp_path`` and the compute knobs are made tiny by *appending* options
(argparse keeps the last value), so each command runs exactly as written otherwise.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cavlog_core import cli
from cavlog_core.data import find_cases

README = Path(__file__).resolve().parents[2] / "README.md"

#: Appended per subcommand: tiny volumes, models and budgets, the CPU.
_SMALL = {
    "synth": ["--shape", "56,56,32"],
    "train": ["--resolution", "64", "--width", "0.125", "--iterations", "3",
              "--warmup-iterations", "1", "--batch-size", "4", "--device", "cpu"],
    "evaluate": ["--device", "cpu"],
    "predict": ["--device", "cpu"],
    "finetune": ["--iterations", "2", "--batch-size", "4", "--device", "cpu"],
    "calibrate": ["--device", "cpu"],
    "benchmark": ["--seeds", "1", "--resolution", "64", "--width", "0.125", "--iterations", "2",
                  "--warmup-iterations", "1", "--batch-size", "4", "--device", "cpu"],
}


def readme_commands() -> list[list[str]]:
    """The ``cavlog ...`` lines of the README's "Command line" block, comments removed."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "cavlog":
            commands.append(words[1:])
    return commands


def python_example() -> str:
    """The ``python`` block of the README's "Python API" section."""
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_block_lists_every_subcommand():
    used = {words[0] for words in readme_commands()}
    assert used == set(cli.SUBCOMMANDS), "the README's command block should show each command"


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # README paths are relative: data/, runs/, preds/, bench/
    # The two placeholders of the README, made real once the synthetic data exists.
    placeholders = {"path/to/BraTS_case/": None, "healthy_scans/": None}
    for words in readme_commands():
        command = words[0]
        if placeholders["healthy_scans/"] is None and command in ("predict", "finetune"):
            lesioned = next(f for f in find_cases("data/synth")
                            if np.asarray(nib.load(f.seg).dataobj).any())
            placeholders["path/to/BraTS_case/"] = str(Path(lesioned.flair).parent)
            placeholders["healthy_scans/"] = "data/synth"  # lesion-free slices of every case
        argv = [placeholders.get(w) or w for w in words] + _SMALL.get(command, [])
        code = cli.main(argv)
        out = capsys.readouterr()
        assert code == 0, f"cavlog {' '.join(words)}\n{out.out[-2000:]}\n{out.err[-2000:]}"
    # The Python API example, with its placeholder case made real.
    code = python_example().replace("BraTS19_XXX/", placeholders["path/to/BraTS_case/"])
    exec(compile(code, "README.md (Python API)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("1 /") and printed[-1].startswith("(")
    assert Path("runs/r1/checkpoint.pt").is_file() and Path("runs/r1_ft/checkpoint.pt").is_file()
    assert Path("runs/r1/report.json").is_file() and Path("runs/r1_site.pt").is_file()
    assert list(Path("preds").glob("*_lesions.csv")) and list(Path("bench").glob("summary*.md"))
