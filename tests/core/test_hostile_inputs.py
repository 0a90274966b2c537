"""Hostile inputs, generated on the fly: every one ends in one line naming the culprit.

For each input the CLI (in-process) must exit 2 with a single ``cavlog <cmd>: error: ...`` line
that names the file or option, print no traceback, leave no partial output and leave earlier
outputs intact; nothing stored in a checkpoint may execute. The napari reader must turn the same
bad files into one notification and no layer. ``OUTCOMES`` counts what happened, per family
(the closing note of the reliability issue quotes the totals).
"""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import cavlog_core.cli as cli
from helpers import CONFIG, phantom, write_nifti

OUTCOMES: Counter = Counter()
SHAPE = (24, 20, 12)
SENTINEL = "earlier output, must survive\n"


# --------------------------------------------------------------------------------------------
# Bad NIfTI files
# --------------------------------------------------------------------------------------------
def _header_only(path: Path, dims: tuple[int, ...], dtype=np.float32) -> Path:
    """A file of a valid NIfTI-1 header claiming ``dims`` and no voxel data at all."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(dims)
    hdr.set_data_dtype(dtype)
    raw = hdr.binaryblock + b"\0\0\0\0"
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _with_affine(path: Path, affine: np.ndarray) -> Path:
    """A phantom whose header's sform rows are ``affine`` verbatim (qform unset)."""
    flair, _, _ = phantom(SHAPE)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(flair.shape)
    hdr.set_data_dtype(np.int16)
    for i, key in enumerate(("srow_x", "srow_y", "srow_z")):
        hdr[key] = affine[i]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    nib.save(nib.Nifti1Image(flair.astype(np.int16), None, header=hdr), path)
    return path


def _truncated(path: Path) -> Path:
    flair, _, _ = phantom(SHAPE)
    write_nifti(path, flair.astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _nifti_cases():
    big = (1200, 1200, 1200)
    cases = {
        "empty file": lambda p: (p.write_bytes(b""), p)[1],
        "random bytes": lambda p: (p.write_bytes(np.random.default_rng(0).bytes(4000)), p)[1],
        "gzip of garbage": lambda p: (p.write_bytes(gzip.compress(b"garbage" * 100)), p)[1],
        "truncated data": _truncated,
        "header claims 1200^3 float32": lambda p: _header_only(p, big),
        "header claims 1200^3 int16": lambda p: _header_only(p, big, np.int16),
        "header claims 2^32 voxels": lambda p: _header_only(p, (32767, 32767, 4)),
        "zero-size dimension": lambda p: _header_only(p, (24, 0, 12)),
        "2D image": lambda p: write_nifti(p, np.ones((20, 20), np.float32)),
        "4D with 3 volumes": lambda p: write_nifti(p, np.ones((8, 8, 8, 3), np.float32)),
        "NaN voxels": lambda p: write_nifti(p, np.where(phantom(SHAPE)[2], np.nan, 0.0)
                                            .astype(np.float32)),
        "Inf voxels": lambda p: write_nifti(p, np.where(phantom(SHAPE)[2], np.inf, 0.0)
                                            .astype(np.float32)),
        "constant image": lambda p: write_nifti(p, np.full(SHAPE, 5, np.int16)),
        "complex voxels": lambda p: write_nifti(p, np.ones(SHAPE, np.complex64)),
        "NaN affine": lambda p: _with_affine(p, np.full((4, 4), np.nan)),
        "Inf affine": lambda p: _with_affine(p, np.diag([np.inf, 1, 1, 1])),
        "all-zero affine": lambda p: _with_affine(p, np.zeros((4, 4))),
        "singular affine": lambda p: _with_affine(p, np.array([[1.0, 1, 0, 0], [1, 1, 0, 0],
                                                               [0, 0, 1, 0], [0, 0, 0, 1]])),
    }
    return cases


NIFTI_CASES = _nifti_cases()


@pytest.fixture
def cli_main(monkeypatch):
    return cli.main


def _one_error_line(err: str, command: str) -> str:
    # Progress bars redraw with carriage returns; what remains on screen is what counts.
    shown = [seg for line in err.splitlines() for seg in line.split("\r")]
    lines = [ln for ln in shown if ln.strip() and not ln.startswith("cavlog: warning:")
             and "[00:" not in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cavlog {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("name", list(NIFTI_CASES))
@pytest.mark.parametrize("command", ["inspect", "predict"])
def test_bad_nifti_one_line_no_output(name, command, tmp_path, capsys, tiny_checkpoint):
    folder = tmp_path / "CASE_X"
    folder.mkdir()
    bad = NIFTI_CASES[name](folder / "CASE_X_flair.nii.gz")
    out = tmp_path / "pred"
    out.mkdir()
    (out / "old.txt").write_text(SENTINEL)
    argv = {"inspect": ["inspect", str(folder)],
            "predict": ["predict", str(tiny_checkpoint), str(folder), "--out", str(out),
                        "--device", "cpu"]}[command]
    code = cli.main(argv)
    line = _one_error_line(capsys.readouterr().err, command)
    assert code == 2
    assert bad.name in line or str(folder) in line, line
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]  # no partial output
    assert (out / "old.txt").read_text() == SENTINEL
    OUTCOMES[f"nifti/{command}: exit 2, one line"] += 1


@pytest.mark.parametrize("name", list(NIFTI_CASES))
def test_bad_nifti_in_the_napari_reader(name, tmp_path, monkeypatch):
    pytest.importorskip("napari", reason="napari is not installed")
    import napari.utils.notifications as notifications

    from napari_cavlog._reader import read_cases

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    folder = tmp_path / "CASE_X"
    folder.mkdir()
    bad = NIFTI_CASES[name](folder / "CASE_X_flair.nii.gz")
    assert read_cases(folder) == [(None,)]
    assert len(shown) == 1 and "\n" not in shown[0] and bad.name in shown[0]
    OUTCOMES["nifti/napari reader: one notification, no layer"] += 1


# --------------------------------------------------------------------------------------------
# Bad checkpoints
# --------------------------------------------------------------------------------------------
class _Boom:
    """Pickles to a call of ``pathlib.Path.touch``: a file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _valid_payload(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)


def _edit(tiny: Path, path: Path, change) -> Path:
    payload = _valid_payload(tiny)
    change(payload)
    torch.save(payload, path)
    return path


def _scale(value):
    def change(p):
        for m in p["modules"].values():
            for k, t in m.items():
                if t.is_floating_point():
                    m[k] = torch.full_like(t, value)
    return change


def _checkpoint_cases(marker: Path):
    def cfg(section, key, value):
        def change(p):
            p["config"][section][key] = value
        return change

    return {
        "not a zip": lambda t, p: (p.write_bytes(b"hello"), p)[1],
        "truncated zip": lambda t, p: (p.write_bytes(t.read_bytes()[:2000]), p)[1],
        "pickle that runs code": lambda t, p: (torch.save({"x": _Boom(marker)}, p), p)[1],
        "plain pickle that runs code": lambda t, p: (p.write_bytes(
            _zip_with_pickle(pickle.dumps(_Boom(marker)))), p)[1],
        "foreign format": lambda t, p: _edit(t, p, lambda d: d.update(format="other")),
        "newer version": lambda t, p: _edit(t, p, lambda d: d.update(version=99)),
        "config is a string": lambda t, p: _edit(t, p, lambda d: d.update(config="x")),
        "NaN threshold": lambda t, p: _edit(t, p, lambda d: d["thresholds"].update(
            healthy_p95=float("nan"))),
        "string threshold": lambda t, p: _edit(t, p, lambda d: d["thresholds"].update(
            healthy_p95="high")),
        "threshold above 1": lambda t, p: _edit(t, p, lambda d: d["thresholds"].update(
            healthy_p95=7.0)),
        "latent size 1e7": lambda t, p: _edit(t, p, cfg("model", "latent_dim", 10**7)),
        "width 100": lambda t, p: _edit(t, p, cfg("model", "width", 100.0)),
        "unknown config key": lambda t, p: _edit(t, p, cfg("model", "bogus", 1)),
        "unknown method": lambda t, p: _edit(t, p, lambda d: d.update(method="nope")),
        "missing modules": lambda t, p: _edit(t, p, lambda d: d.pop("modules")),
        "NaN weights": lambda t, p: _edit(t, p, _scale(float("nan"))),
        "Inf weights": lambda t, p: _edit(t, p, _scale(float("inf"))),
        "all-zero weights": lambda t, p: _edit(t, p, _scale(0.0)),
        "histogram reference path": lambda t, p: _edit(
            t, p, cfg("preprocess", "histogram_reference", "/dev/zero")),
        "weights of another shape": lambda t, p: _edit(t, p, lambda d: d["modules"]["model"]
                                                       .update({"fc_mu.weight": torch.ones(3)})),
    }


def _zip_with_pickle(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


CKPT_NAMES = list(_checkpoint_cases(Path("unused")))


@pytest.mark.parametrize("name", CKPT_NAMES)
@pytest.mark.parametrize("command", ["predict", "evaluate", "finetune"])
def test_bad_checkpoint_one_line_nothing_executed(name, command, tmp_path, capsys, make_case,
                                                  tiny_checkpoint):
    marker = tmp_path / "EXECUTED"
    bad = _checkpoint_cases(marker)[name](tiny_checkpoint, tmp_path / "bad.pt")
    case = make_case("C1", root=tmp_path / "data")
    out = tmp_path / "out"
    argv = {
        "predict": ["predict", str(bad), str(case), "--out", str(out), "--device", "cpu"],
        "evaluate": ["evaluate", str(bad), str(tmp_path / "data"), "--split", "all",
                     "--out", str(out / "r.json"), "--device", "cpu"],
        "finetune": ["finetune", str(bad), str(tmp_path / "data"), "--out", str(out),
                     "--iterations", "1", "--device", "cpu"],
    }[command]
    code = cli.main(argv)
    line = _one_error_line(capsys.readouterr().err, command)
    assert code == 2 and "bad.pt" in line, line
    assert not marker.exists(), "code stored in a checkpoint was executed"
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [p for p in leftovers if p.suffix in (".pt", ".gz", ".json")], leftovers
    OUTCOMES[f"checkpoint/{command}: exit 2, one line, nothing executed"] += 1


# --------------------------------------------------------------------------------------------
# Bad options and output locations
# --------------------------------------------------------------------------------------------
OPTION_CASES = {
    "--log-every 0": (["--log-every", "0"], "log_every"),
    "--checkpoint-every 0": (["--checkpoint-every", "0"], "checkpoint_every"),
    "--seed -1": (["--seed", "-1"], "seed"),
    "--iterations 0": (["--iterations", "0"], "iterations"),
    "--batch-size 0": (["--batch-size", "0"], "batch_size"),
    "--lr -1": (["--lr", "-1"], "lr"),
    "--resolution 33": (["--resolution", "33"], "resolution"),
    "--resolution 4096": (["--resolution", "4096"], "resolution"),
    "--latent-dim 10000000": (["--latent-dim", "10000000"], "latent_dim"),
    "--p 2": (["--p", "2"], "p="),
    "--t 0": (["--t", "0"], "t="),
    "--t-every 0": (["--t-every", "0"], "t_every"),
    "--width 0": (["--width", "0"], "width"),
    "--split-fractions 1,1,1": (["--split-fractions", "1,1,1"], "split_fractions"),
}


@pytest.mark.parametrize("name", list(OPTION_CASES))
def test_bad_training_option_fails_before_any_work(name, tmp_path, capsys, make_case):
    extra, fragment = OPTION_CASES[name]
    make_case("C1", root=tmp_path / "data")
    out = tmp_path / "run"
    code = cli.main(["train", str(tmp_path / "data"), "--out", str(out), "--resolution", "32",
                     "--device", "cpu", *extra] if "--resolution" not in extra else
                    ["train", str(tmp_path / "data"), "--out", str(out), "--device", "cpu",
                     *extra])
    line = _one_error_line(capsys.readouterr().err, "train")
    assert code == 2 and fragment in line, line
    assert not out.exists()  # checked before data loading or any file
    OUTCOMES["options/train: exit 2, one line, no output"] += 1


def _output_cases(tmp: Path, ckpt: Path, data: Path):
    existing = tmp / "existing_file"
    existing.write_text(SENTINEL)
    report = tmp / "old_report.json"
    report.write_text(SENTINEL)
    return {
        "predict --out is a file": (["predict", str(ckpt), str(data), "--out", str(existing),
                                     "--device", "cpu"], "predict", existing),
        "train --out is a file": (["train", str(data), "--out", str(existing), "--resolution",
                                   "32", "--device", "cpu", "--iterations", "1"], "train",
                                  existing),
        "finetune --out is a file": (["finetune", str(ckpt), str(data), "--out", str(existing),
                                      "--iterations", "1", "--device", "cpu"], "finetune",
                                     existing),
        "evaluate --out is a folder": (["evaluate", str(ckpt), str(data), "--split", "all",
                                        "--out", str(tmp), "--device", "cpu"], "evaluate", None),
        "evaluate --out is a folder named .json": (
            ["evaluate", str(ckpt), str(data), "--split", "all", "--out", str(tmp / "d.json"),
             "--device", "cpu"], "evaluate", None),
        "evaluate would overwrite a report": (
            ["evaluate", str(ckpt), str(data), "--split", "all", "--out", str(report),
             "--device", "cpu"], "evaluate", report),
        "predict --out under a file": (["predict", str(ckpt), str(data), "--out",
                                        str(existing / "sub"), "--device", "cpu"], "predict",
                                       existing),
    }


OUTPUT_NAMES = [
    "predict --out is a file", "train --out is a file", "finetune --out is a file",
    "evaluate --out is a folder", "evaluate --out is a folder named .json",
    "evaluate would overwrite a report", "predict --out under a file"]


@pytest.mark.parametrize("name", OUTPUT_NAMES)
def test_bad_output_location_one_line_and_nothing_lost(name, tmp_path, capsys, make_case,
                                                       tiny_checkpoint):
    data = make_case("C1", root=tmp_path / "data")
    (tmp_path / "d.json").mkdir()
    argv, command, keep = _output_cases(tmp_path, tiny_checkpoint, tmp_path / "data")[name]
    code = cli.main(argv)
    line = _one_error_line(capsys.readouterr().err, command)
    assert (code == 2 and "--out" in line) or "exists" in line, line
    if keep is not None:
        assert keep.read_text() == SENTINEL
    assert data.is_dir()
    OUTCOMES["outputs: exit 2, one line, earlier files intact"] += 1


# --------------------------------------------------------------------------------------------
# Concurrency, stale files, damaged caches
# --------------------------------------------------------------------------------------------
def test_second_run_into_a_busy_folder_refuses_and_stale_locks_are_taken(tmp_path, capsys,
                                                                         make_case,
                                                                         tiny_checkpoint):
    import os
    import subprocess
    import sys

    make_case("C1", root=tmp_path / "data")
    for command, out, lock in (
            ("train", tmp_path / "run", ".cavlog-run.lock"),
            ("predict", tmp_path / "pred", ".cavlog-run.lock"),
            ("evaluate", tmp_path / "rep", ".r.json.lock")):
        out.mkdir()
        (out / lock).write_text(str(os.getppid()))  # a live process (pytest's parent) holds it
        argv = {"train": ["train", str(tmp_path / "data"), "--out", str(out), "--resolution",
                          "32", "--iterations", "1", "--device", "cpu"],
                "predict": ["predict", str(tiny_checkpoint), str(tmp_path / "data"), "--out",
                            str(out), "--device", "cpu"],
                "evaluate": ["evaluate", str(tiny_checkpoint), str(tmp_path / "data"),
                             "--split", "all", "--out", str(out / "r.json"), "--device",
                             "cpu"]}[command]
        assert cli.main(argv) == 2
        line = _one_error_line(capsys.readouterr().err, command)
        assert f"process {os.getppid()}" in line and "already writing" in line
        OUTCOMES["concurrency: busy folder refused with the owner's PID"] += 1
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    out = tmp_path / "pred"
    (out / ".cavlog-run.lock").write_text(gone)
    stale = out / ".C1_anomaly-abcd1234.nii.gz"
    stale.write_bytes(b"half a file from a killed run")
    assert cli.main(["predict", str(tiny_checkpoint), str(tmp_path / "data"), "--out", str(out),
                     "--device", "cpu"]) == 0
    assert not stale.exists() and (out / "C1_anomaly.nii.gz").is_file()
    assert not (out / ".cavlog-run.lock").exists()
    OUTCOMES["stale lock taken over, stale temporary removed"] += 1


def test_truncated_slice_cache_is_rebuilt_with_a_warning(tmp_path, make_case):
    from cavlog_core.config import PreprocessConfig
    from cavlog_core.data import build_slice_arrays, find_cases

    make_case("C1", root=tmp_path / "data")
    cfg = PreprocessConfig(resolution=32, slices="brain")
    cache = tmp_path / "cache"
    first = build_slice_arrays(find_cases(tmp_path / "data"), cfg, cache_dir=cache)
    entry = next(cache.glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:100])  # killed while writing
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        again = build_slice_arrays(find_cases(tmp_path / "data"), cfg, cache_dir=cache)
    np.testing.assert_array_equal(first.images, again.images)
    OUTCOMES["damaged cache rebuilt with a warning"] += 1


def test_full_disk_leaves_the_previous_file_and_says_how_much(tmp_path, monkeypatch):
    import errno

    from cavlog_core._atomic import atomic_path
    from cavlog_core.errors import CavlogError

    target = tmp_path / "checkpoint.pt"
    target.write_text(SENTINEL)
    with pytest.raises(CavlogError, match=r"no space left on device after writing .*previous "
                                          r"checkpoint.pt is unchanged"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 300_000)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == SENTINEL
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    OUTCOMES["full disk: previous file kept, temporary removed, size stated"] += 1


def test_report_outcome_counts():
    """Runs last in this module: prints the outcome counts (pytest -s shows them)."""
    total = sum(OUTCOMES.values())
    print(f"\nhostile inputs tried: {total}")
    for k, v in sorted(OUTCOMES.items()):
        print(f"  {v:4d}  {k}")
    assert total > 0 or not OUTCOMES  # the module may run alone with -k filters


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from cavlog_core.checkpoint import save_checkpoint
    from cavlog_core.methods import get_method

    torch.manual_seed(0)
    method = get_method("constrained")(CONFIG)
    modules = method.build()
    return save_checkpoint(tmp_path / "tiny" / "checkpoint.pt", method=method, modules=modules,
                           thresholds={"healthy_p85": 0.3, "healthy_p95": 0.45})



def test_pure_noise_brain_is_loaded_with_a_warning(tmp_path):
    from cavlog_core.data import load_case

    noise = np.random.default_rng(0).uniform(1, 1000, (64, 64, 40)).astype(np.float32)
    write_nifti(tmp_path / "N" / "N_flair.nii.gz", noise)
    with pytest.warns(RuntimeWarning, match="does not look like a skull-stripped brain"):
        load_case(tmp_path / "N")
    OUTCOMES["suspicious input: warning, still usable"] += 1
