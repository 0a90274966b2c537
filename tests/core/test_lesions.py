"""find_lesions: connected components in mL, by hand."""

import numpy as np
import pytest

from cavlog_core.errors import CavlogError
from cavlog_core.lesions import find_lesions


def test_two_lesions_by_hand():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True            # 8 voxels
    mask[6:9, 6:9, 5:9] = True            # 36 voxels
    mask[0, 9, 9] = True                  # 1 voxel: dropped by the size filter
    scores = np.zeros(mask.shape)
    scores[7, 7, 6] = 0.9
    affine = np.diag([2.0, 1.0, 1.5, 1.0])  # 3 mm³ voxels
    table = find_lesions(mask, affine=affine, scores=scores, min_volume_ml=0.01)
    assert [les.voxels for les in table.lesions] == [36, 8] and table.removed == 1
    big = table.lesions[0]
    assert big.volume_ml == pytest.approx(36 * 3 / 1000)
    assert big.centroid_voxel == pytest.approx((7.0, 7.0, 6.5))
    assert big.centroid_mm == pytest.approx((14.0, 7.0, 9.75))
    assert big.max_score == pytest.approx(0.9) and (big.z_first, big.z_last) == (5, 8)
    assert table.total_ml == pytest.approx(44 * 3 / 1000)
    csv = table.to_csv().splitlines()
    assert csv[0].startswith("lesion,volume_ml,") and csv[1].startswith("1,0.1080,36,")
    # Diagonal neighbours are one lesion (26-connectivity).
    diag = np.zeros((3, 3, 3), bool)
    diag[0, 0, 0] = diag[1, 1, 1] = True
    assert len(find_lesions(diag, affine=np.eye(4)).lesions) == 1
    assert find_lesions(np.zeros((2, 2, 2), bool), affine=np.eye(4)).lesions == ()
    with pytest.raises(CavlogError, match="min_volume_ml=-1"):
        find_lesions(mask, affine=affine, min_volume_ml=-1)


def test_cli_predict_writes_the_lesion_table(tmp_path, make_case, capsys):
    import csv

    import torch

    from cavlog_core.checkpoint import save_checkpoint
    from cavlog_core.cli import main
    from cavlog_core.data import load_case
    from cavlog_core.methods import get_method
    from helpers import CONFIG

    torch.manual_seed(0)
    method = get_method("constrained")(CONFIG)
    ckpt = save_checkpoint(tmp_path / "c.pt", method=method, modules=method.build(),
                           thresholds={"healthy_p95": 0.45})
    folder = make_case("L_01", shape=(26, 30, 10))
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(folder), "--out", str(out), "--threshold", "0.3",
                 "--device", "cpu", "--min-lesion-ml", "0"]) == 0
    assert "mL in all" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "L_01_lesions.csv").open()))
    import nibabel as nib

    mask = np.asarray(nib.load(out / "L_01_mask.nii.gz").dataobj) > 0
    case = load_case(folder)
    voxel_ml = abs(np.linalg.det(case.affine[:3, :3])) / 1000
    assert sum(float(r["volume_ml"]) for r in rows) == pytest.approx(mask.sum() * voxel_ml,
                                                                     abs=1e-3)
    assert main(["predict", str(ckpt), str(folder), "--out", str(out), "--device", "cpu",
                 "--min-lesion-ml", "-1"]) == 2


def test_healthy_component_volume_and_checkpoint_default():
    from cavlog_core.lesions import healthy_component_volume, min_lesion_ml

    # 20 spurious components of 0.01 ... 0.20 mL: 95 % of them are below the 95th percentile.
    volumes = [0.01 * k for k in range(1, 21)]
    assert healthy_component_volume(volumes) == pytest.approx(np.quantile(volumes, 0.95))
    assert healthy_component_volume([]) == 0.0
    assert min_lesion_ml({"extra": {"min_lesion_ml": 0.4}}) == 0.4
    for bad in (None, {}, {"extra": {"min_lesion_ml": "x"}}, {"extra": {"min_lesion_ml": -1}}):
        assert min_lesion_ml(bad) == 0.05
