"""Lesion presets of the synthetic dataset (``SynthConfig.lesions``, ``cavlog synth --lesions``)."""

import json

import numpy as np
import pytest

from cavlog_core import cli
from cavlog_core.config import SynthConfig
from cavlog_core.data import select_slices
from cavlog_core.errors import CavlogError
from cavlog_core.synth import generate_subject, subject_seed


def central_share(subject) -> tuple[float, np.ndarray]:
    z = select_slices(subject.brain, "central:10")
    lesion = (subject.seg[:, :, z] > 0) & subject.brain[:, :, z]
    return lesion.sum() / subject.brain[:, :, z].sum(), lesion.sum(axis=(0, 1))


@pytest.mark.parametrize("k", [2, 4])
def test_glioma_is_brats_sized_on_the_central_slices(k):
    s = generate_subject(subject_seed(0, k), lesions="glioma")
    share, area = central_share(s)
    assert 0.06 < share < 0.22  # BraTS: 8-19 % on the three shared cases
    assert 800 < area.min() and area.max() < 3500  # mm² per slice (1 mm pixels)
    assert {1, 2, 4} <= set(np.unique(s.seg).tolist()) or {1, 2} <= set(np.unique(s.seg).tolist())


def test_ms_lesions_are_many_small_white_matter_lesions():
    from scipy import ndimage

    s = generate_subject(subject_seed(0, 2), lesions="ms")
    share, _ = central_share(s)
    assert 0.003 < share < 0.04
    assert set(np.unique(s.seg).tolist()) == {0, 1}
    _, n = ndimage.label(s.seg > 0)
    assert n >= 10
    well = generate_subject(subject_seed(0, 2), healthy=True, lesions="ms")
    np.testing.assert_array_equal(well.brain, s.brain)  # no mass effect for MS
    assert np.median(s.flair[s.seg > 0]) > 1.3 * np.median(s.flair[s.brain & (s.seg == 0)])


def test_bad_preset_and_cli(tmp_path, monkeypatch):
    with pytest.raises(CavlogError, match="lesions='flu'"):
        SynthConfig(lesions="flu")
    with pytest.raises(CavlogError, match="lesions='flu'"):
        generate_subject(0, (32, 32, 16), lesions="flu")
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("synth",))
    assert cli.main(["synth", str(tmp_path / "d"), "--subjects", "2", "--shape", "48,48,24",
                     "--lesions", "ms", "--quiet"]) == 0
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["lesions"] == "ms" and meta["labels"]["1"] == "white-matter lesion"
