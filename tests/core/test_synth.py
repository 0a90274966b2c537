"""Built-in synthetic BraTS-like dataset: generator, writer and ``cavlog synth``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cavlog_core import cli
from cavlog_core.config import SynthConfig
from cavlog_core.errors import CavlogError
from cavlog_core.synth import (
    ANATOMY_VERSION,
    SyntheticSubject,
    SynthProgress,
    SynthResult,
    dataset_anatomy_version,
    generate_subject,
    healthy_flags,
    iter_subjects,
    make_synthetic_dataset,
    subject_seed,
    synth_affine,
    write_synthetic_dataset,
)

SMALL = (64, 64, 32)


@pytest.fixture(scope="module")
def lesioned():
    """Three lesioned small subjects (seeds 0-2)."""
    return [generate_subject(s, SMALL, healthy=False) for s in range(3)]


def run_cli(monkeypatch, *argv: str) -> int:
    # Only the synth subcommand: the other modules belong to other parts of the project.
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("synth",))
    return cli.main(["synth", *argv])


def test_same_seed_same_arrays_and_types():
    a = generate_subject(7, SMALL)
    b = generate_subject(7, SMALL)
    c = generate_subject(8, SMALL)
    assert isinstance(a, SyntheticSubject)
    flair, seg, brain = a  # unpacks as a tuple
    assert flair.shape == seg.shape == brain.shape == SMALL
    assert (flair.dtype, seg.dtype, brain.dtype) == (np.float32, np.uint8, np.bool_)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.flair, c.flair)


def test_healthy_is_same_brain_without_lesion():
    sick = generate_subject(3, SMALL, healthy=False)
    well = generate_subject(3, SMALL, healthy=True)
    assert sick.seg.any()
    assert not well.seg.any()
    # Same anatomy stream: brain masks agree except near the lesion's mass effect.
    overlap = (sick.brain & well.brain).sum() / (sick.brain | well.brain).sum()
    assert overlap > 0.97


def test_labels_mask_and_background(lesioned):
    for flair, seg, brain in lesioned:
        assert set(np.unique(seg)) <= {0, 1, 2, 4}
        assert {1, 2} <= set(np.unique(seg).tolist())
        assert not (seg > 0)[~brain].any(), "lesion outside the brain"
        assert np.all(flair[~brain] == 0), "background must be exactly 0"
        assert flair[brain].min() >= 1
        np.testing.assert_array_equal(flair, np.rint(flair))  # integer-valued (int16 on disk)
        assert 0.05 < brain.mean() < 0.4


def test_lesion_is_hyperintense(lesioned):
    for flair, seg, brain in lesioned:
        oedema_median = np.median(flair[seg == 2])
        assert oedema_median > 1.3 * np.median(flair[brain])


def test_lesions_mostly_on_central_slices(lesioned):
    for _, seg, brain in lesioned:
        z = np.nonzero(brain.any(axis=(0, 1)))[0]
        mid = (z[0] + z[-1]) // 2
        per_slice = (seg > 0).sum(axis=(0, 1))
        assert per_slice[mid - 5: mid + 5].sum() > 0
        quarter = (z[-1] - z[0]) // 4
        assert per_slice[: z[0] + quarter].sum() == 0, "lesion in the lowest quarter"
        assert per_slice[z[-1] - quarter + 1:].sum() == 0, "lesion in the top quarter"


def test_default_shape_subject():
    flair, seg, brain = generate_subject(subject_seed(0, 0), (240, 240, 155))
    z = np.nonzero(brain.any(axis=(0, 1)))[0]
    assert 0 <= z[0] < 25 and 125 < z[-1] < 155
    mid = (z[0] + z[-1]) // 2
    central = slice(mid - 5, mid + 5)
    frac = (seg[:, :, central] > 0).sum(axis=(0, 1)) / brain[:, :, central].sum(axis=(0, 1))
    assert (frac > 0).any()
    assert 0.04 < frac.max() < 0.3  # the glioma preset: BraTS-sized (8-20 % on average)
    # FLAIR contrast: lesion > brain (grey matter dominated rim) > CSF-like low tail.
    assert np.median(flair[seg > 0]) > 1.3 * np.median(flair[brain])
    assert np.percentile(flair[brain], 1) < 0.6 * np.median(flair[brain])


def test_healthy_flags_hand_computed():
    # H(m) = round(0.2 m) clipped to [1, m - 1]: H = 0,0,1,1,1,1,1,1,2,2,2 for m = 0..10.
    np.testing.assert_array_equal(np.nonzero(healthy_flags(10, 0.2))[0], [1, 7])
    assert healthy_flags(2, 0.2).tolist() == [False, True]
    assert healthy_flags(2, 0.9).tolist() == [True, False]
    assert healthy_flags(1, 0.2).tolist() == [False]
    assert not healthy_flags(5, 0.0).any()
    assert healthy_flags(5, 1.0).all()
    long = healthy_flags(200, 0.3)
    assert long.sum() == 60
    for n in (2, 3, 17, 50):  # subject k's flag does not depend on n
        np.testing.assert_array_equal(healthy_flags(n, 0.3), long[:n])
    with pytest.raises(CavlogError, match="healthy_fraction"):
        healthy_flags(3, 1.5)


def test_subject_k_independent_of_n():
    few = dict(iter_subjects(SynthConfig(subjects=2, seed=5, shape=SMALL)))
    many = dict(iter_subjects(SynthConfig(subjects=4, seed=5, shape=SMALL)))
    for case_id in few:
        for x, y in zip(few[case_id], many[case_id]):
            np.testing.assert_array_equal(x, y)
    assert subject_seed(5, 1) != subject_seed(5, 0) != subject_seed(6, 0)


def test_bad_shape_and_seed():
    with pytest.raises(CavlogError, match="shape"):
        generate_subject(0, (10, 64, 64))
    with pytest.raises(CavlogError, match="shape"):
        generate_subject(0, (64, 64))
    with pytest.raises(CavlogError, match="seed"):
        generate_subject(-1, SMALL)


def test_writer_generator_protocol(tmp_path):
    cfg = SynthConfig(subjects=3, seed=1, shape=(48, 48, 24), healthy_fraction=0.5)
    gen = write_synthetic_dataset(tmp_path / "ds", cfg)
    events = []
    with pytest.raises(StopIteration) as stop:
        while True:
            events.append(next(gen))
    result = stop.value.value
    assert isinstance(result, SynthResult)
    assert all(isinstance(e, SynthProgress) for e in events)
    assert [e.done for e in events] == [1, 2, 3] and {e.total for e in events} == {3}
    assert result.case_ids == ("SYN_0000", "SYN_0001", "SYN_0002")
    assert list(result.healthy) == healthy_flags(3, 0.5).tolist()
    assert [e.lesion_voxels == 0 for e in events] == list(result.healthy)


def test_cli_writes_brats_tree(tmp_path, monkeypatch, capsys):
    out = tmp_path / "synthetic"
    rc = run_cli(monkeypatch, str(out), "--subjects", "3", "--seed", "4", "--shape", "48,40,24",
                 "--healthy-fraction", "0.4", "--quiet")
    assert rc == 0
    assert "wrote 3 subjects" in capsys.readouterr().out
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["shape"] == [48, 40, 24] and meta["seed"] == 4
    assert meta["anatomy_version"] == ANATOMY_VERSION  # scripts regenerate older datasets
    assert dataset_anatomy_version(meta) == ANATOMY_VERSION
    assert dataset_anatomy_version({"lesions": "glioma"}) == 1  # written before versions
    assert [c["case_id"] for c in meta["cases"]] == ["SYN_0000", "SYN_0001", "SYN_0002"]
    assert sum(c["healthy"] for c in meta["cases"]) == 1  # round(0.4 * 3)
    assert sorted(p.name for p in out.iterdir()) == ["SYN_0000", "SYN_0001", "SYN_0002",
                                                    "dataset.json"]
    for case in meta["cases"]:
        cid = case["case_id"]
        files = sorted(p.name for p in (out / cid).iterdir())
        assert files == [f"{cid}_brainmask.nii.gz", f"{cid}_flair.nii.gz", f"{cid}_seg.nii.gz"]
        flair_img = nib.load(out / cid / f"{cid}_flair.nii.gz")
        seg_img = nib.load(out / cid / f"{cid}_seg.nii.gz")
        mask_img = nib.load(out / cid / f"{cid}_brainmask.nii.gz")
        assert nib.aff2axcodes(flair_img.affine) == ("R", "A", "S")
        assert flair_img.header.get_zooms() == (1.0, 1.0, 1.0)
        np.testing.assert_allclose(flair_img.affine, synth_affine((48, 40, 24)))
        assert seg_img.get_data_dtype() == np.uint8 and mask_img.get_data_dtype() == np.uint8
        seg = np.asarray(seg_img.dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 4}
        assert int((seg > 0).sum()) == case["lesion_voxels"]
        assert case["healthy"] == (case["lesion_voxels"] == 0)
        # The file holds exactly the generator's arrays.
        subject = generate_subject(case["seed"], (48, 40, 24), healthy=case["healthy"])
        np.testing.assert_array_equal(np.asarray(flair_img.dataobj), subject.flair)
        np.testing.assert_array_equal(np.asarray(mask_img.dataobj).astype(bool), subject.brain)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--shape", "10,10"], "--shape '10,10': expected three"),
        (["--shape", "8,64,64"], "each >= 16"),
        (["--subjects", "0"], "subjects=0"),
        (["--subjects", "two"], "--subjects 'two'"),
        (["--healthy-fraction", "1.5"], "healthy_fraction=1.5"),
        (["--seed", "-3"], "--seed -3"),
    ],
)
def test_cli_bad_arguments_one_line(tmp_path, monkeypatch, capsys, args, expected):
    rc = run_cli(monkeypatch, str(tmp_path / "out"), *args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("cavlog synth: error:")
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_cli_out_is_a_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("not a folder")
    rc = run_cli(monkeypatch, str(target), "--subjects", "1", "--shape", "32,32,16")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert str(target) in err and "not a directory" in err
    assert target.read_text() == "not a folder"


def test_refuses_stale_cases_beyond_n(tmp_path):
    cfg = SynthConfig(subjects=2, seed=0, shape=(32, 32, 16))
    make_synthetic_dataset(tmp_path, cfg)
    # Rewriting the same (or a larger) dataset is fine; a smaller one would leave SYN_0001 behind.
    make_synthetic_dataset(tmp_path, cfg)
    with pytest.raises(CavlogError, match="SYN_0001"):
        write_synthetic_dataset(tmp_path, SynthConfig(subjects=1, seed=0, shape=(32, 32, 16)))
