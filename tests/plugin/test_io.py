"""napari plugin reader, writer, sample data and manifest."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("napari", reason="napari is not installed (pip install napari-cavlog[napari])")

from helpers import LPS_AFFINE, phantom, write_nifti
from napari_cavlog._orient import from_display, to_display
from napari_cavlog._reader import get_reader
from napari_cavlog._writer import write_image, write_labels

# A scanner-like oblique-free affine that is neither RAS nor LPS: axes permuted and flipped.
ODD_AFFINE = np.array([[0, 0, -2.0, 30], [1.5, 0, 0, -20], [0, -1.0, 0, 10], [0, 0, 0, 1]])


def _read(path):
    reader = get_reader(str(path))
    assert reader is not None, f"{path} was not recognised"
    return reader(str(path))


def test_reader_ignores_paths_it_does_not_handle(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "empty")) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert get_reader([str(tmp_path / "notes.txt")]) is None


@pytest.mark.parametrize("style", ["2019", "2023"])
def test_reader_opens_a_case_folder_with_aligned_ground_truth(make_case, style):
    folder = make_case("CASE_7", style=style, shape=(24, 20, 12), affine=LPS_AFFINE)
    layers = _read(folder)
    assert [t for *_, t in layers] == ["image", "labels"]
    (flair, fmeta, _), (seg, smeta, _) = layers
    # Stored LPS (24, 20, 12) -> canonical RAS (24, 20, 12) -> display (Z, Y, X).
    assert flair.shape == seg.shape == (12, 20, 24)
    raw_flair, raw_seg, _ = phantom((24, 20, 12))
    if style == "2023":
        raw_seg = np.where(raw_seg == 4, 3, raw_seg)
    canonical_flair = raw_flair[::-1, ::-1, :]  # LPS -> RAS: flip x and y
    canonical_seg = raw_seg[::-1, ::-1, :]
    np.testing.assert_array_equal(from_display(flair), canonical_flair.astype(np.int16))
    np.testing.assert_array_equal(from_display(seg), canonical_seg)
    # The lesion is bright in the FLAIR at exactly the labelled voxels.
    assert flair[seg > 0].min() > flair[(seg == 0) & (flair > 0)].max() - 1e-3
    info = fmeta["metadata"]["cavlog"]
    assert info["case_id"] == "CASE_7" and info["role"] == "flair"
    assert smeta["metadata"]["cavlog"]["role"] == "ground_truth"
    assert fmeta["scale"] == smeta["scale"] == (1.0, 1.0, 1.0)
    assert info["brain_mask"].shape == flair.shape and info["brain_mask"].dtype == bool


def test_reader_single_file_with_anisotropic_spacing_and_bad_file(tmp_path):
    flair, _, _ = phantom((24, 20, 12))
    affine = np.diag([0.5, 0.8, 3.0, 1.0])
    path = write_nifti(tmp_path / "scan.nii.gz", flair, affine)
    layers = _read(path)
    assert len(layers) == 1
    data, meta, kind = layers[0]
    assert kind == "image" and data.shape == (12, 20, 24)
    assert meta["scale"] == pytest.approx((3.0, 0.8, 0.5))

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    assert _read(bad) == [(None,)]  # an error notification, no traceback, no layer


def test_writer_round_trip_restores_the_source_geometry(tmp_path, make_case):
    flair, seg, _ = phantom((24, 20, 12))
    folder = tmp_path / "ODD"
    write_nifti(folder / "ODD_flair.nii.gz", flair.astype(np.float32), ODD_AFFINE)
    write_nifti(folder / "ODD_seg.nii.gz", seg, ODD_AFFINE)
    (img, img_meta, _), (lab, lab_meta, _) = _read(folder)

    out_img = write_image(str(tmp_path / "out" / "flair_copy"), img, img_meta)
    out_lab = write_labels(str(tmp_path / "out" / "seg_copy.nii"), lab, lab_meta)
    assert out_img[0].endswith("flair_copy.nii.gz") and out_lab[0].endswith("seg_copy.nii")
    back_img, back_lab = nib.load(out_img[0]), nib.load(out_lab[0])
    np.testing.assert_allclose(back_img.affine, ODD_AFFINE)
    np.testing.assert_allclose(back_lab.affine, ODD_AFFINE)
    np.testing.assert_array_equal(np.asarray(back_img.dataobj), flair)  # voxel by voxel
    np.testing.assert_array_equal(np.asarray(back_lab.dataobj), seg)
    assert back_img.get_data_dtype() == np.float32 and back_lab.get_data_dtype() == np.uint8

    # A layer from elsewhere (no geometry): canonical RAS with the layer scale as spacing.
    plain = to_display(np.arange(60, dtype=np.float32).reshape(5, 4, 3))
    out = write_image(str(tmp_path / "plain.nii.gz"), plain, {"scale": (3.0, 2.0, 1.0)})
    img = nib.load(out[0])
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.arange(60).reshape(5, 4, 3))
    np.testing.assert_allclose(np.diag(img.affine), [1.0, 2.0, 3.0, 1.0])


def test_sample_data_is_a_lesioned_synthetic_case():
    from napari_cavlog._sample_data import synthetic_case

    layers = synthetic_case(shape=(64, 64, 40))
    (flair, fmeta, fkind), (seg, _, skind) = layers
    assert (fkind, skind) == ("image", "labels")
    assert flair.shape == seg.shape == (40, 64, 64)
    assert seg.any() and set(np.unique(seg)) <= {0, 1, 2, 4}
    brain = fmeta["metadata"]["cavlog"]["brain_mask"]
    assert not (seg > 0)[~brain].any()
    assert np.median(flair[seg == 2]) > np.median(flair[brain & (seg == 0)])


def test_manifest_validates_and_contributions_resolve():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-cavlog")
    manifest.validate_imports()
    contrib = manifest.contributions
    ids = [c.id for c in contrib.commands]
    assert len(ids) == len(set(ids)), ids
    # The first widget is what `napari -w napari-cavlog` docks: both tools as tabs.
    assert [w.display_name for w in contrib.widgets] == [
        "Anomaly segmentation and fine-tuning", "Anomaly segmentation",
        "Fine-tune on healthy scans"]
    assert [s.key for s in contrib.sample_data] == ["synthetic_case"]
    assert {tuple(w.layer_types) for w in contrib.writers} == {("image",), ("labels",)}


def test_viewer_opens_and_saves_through_the_plugin(make_napari_viewer, make_case, tmp_path):
    folder = make_case("CASE_V", shape=(24, 20, 12))
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin="napari-cavlog")
    assert [layer.name for layer in layers] == ["CASE_V FLAIR", "CASE_V ground truth"]
    assert viewer.dims.ndim == 3 and viewer.dims.range[0].stop == pytest.approx(11.0)
    saved = viewer.layers["CASE_V ground truth"].save(str(tmp_path / "gt.nii.gz"),
                                                      plugin="napari-cavlog")
    stored = np.asarray(nib.load(saved[0]).dataobj)
    np.testing.assert_array_equal(stored, phantom((24, 20, 12))[1])


def test_plugin_widgets_and_sample_through_napari(make_napari_viewer):
    from napari_cavlog import AnomalyWidget, FineTuneWidget

    viewer = make_napari_viewer()
    _, anomaly = viewer.window.add_plugin_dock_widget("napari-cavlog", "Anomaly segmentation")
    _, tune = viewer.window.add_plugin_dock_widget("napari-cavlog", "Fine-tune on healthy scans")
    assert isinstance(anomaly, AnomalyWidget) and isinstance(tune, FineTuneWidget)
    # napari hands plugin widgets a public-API proxy of the viewer: it must be enough.
    layers = viewer.open_sample("napari-cavlog", "synthetic_case")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    # The widget picked the sample's FLAIR and its ground truth by itself.
    assert anomaly.flair_combo.currentText() == layers[0].name
    assert anomaly.gt_combo.currentText() == layers[1].name


@pytest.mark.gui
def test_large_scans_are_read_in_the_background(make_napari_viewer, make_case, tmp_path,
                                                monkeypatch):
    import napari.utils.notifications as notifications

    import napari_cavlog._qt.background as background
    import napari_cavlog._reader as reader
    from napari_cavlog._qt.common import wait_until

    monkeypatch.setattr(reader, "BACKGROUND_VOXELS", 100)  # every scan counts as large
    errors: list[str] = []
    monkeypatch.setattr(notifications, "show_error", errors.append)
    viewer = make_napari_viewer()
    folder = make_case("BG_01", root=tmp_path / "data")
    workers = []
    real = background.read_in_background
    monkeypatch.setattr(background, "read_in_background",
                        lambda *a, **k: workers.append(real(*a, **k)) or workers[-1])
    viewer.open(str(folder), plugin="napari-cavlog")
    assert len(workers) == 1  # the GUI thread only started the worker
    assert wait_until(lambda: len(viewer.layers) == 2, timeout=60)
    assert [layer.name for layer in viewer.layers] == ["BG_01 FLAIR", "BG_01 ground truth"]
    assert viewer.layers[0].metadata["cavlog"]["case_id"] == "BG_01"
    # A bad scan read in the background ends in one notification and no layer.
    bad = tmp_path / "bad" / "BAD_flair.nii.gz"
    bad.parent.mkdir()
    flair, _, _ = phantom((24, 20, 12))
    write_nifti(bad, np.where(flair > 0, np.nan, 0).astype(np.float32))
    viewer.open(str(bad), plugin="napari-cavlog")
    assert wait_until(lambda: bool(errors) and not workers[-1].is_running, timeout=60)
    assert len(viewer.layers) == 2 and "NaN" in errors[0] and "\n" not in errors[0]


def test_reader_claims_folders_it_can_explain_and_opens_dataset_roots(tmp_path, make_case,
                                                                       monkeypatch):
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    no_flair = tmp_path / "T1_ONLY"
    write_nifti(no_flair / "T1_ONLY_t1.nii.gz", np.ones((8, 8, 8), np.int16))
    assert _read(no_flair) == [(None,)]  # claimed, with this plugin's reason
    assert len(shown) == 1 and "no FLAIR image" in shown[0]
    root = tmp_path / "root"
    make_case("R_1", root=root)
    make_case("R_2", root=root)
    layers = _read(root)
    assert [meta["name"] for _, meta, _ in layers] == [
        "R_1 FLAIR", "R_1 ground truth", "R_2 FLAIR", "R_2 ground truth"]
