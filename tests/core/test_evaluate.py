"""evaluate(): split, skipped scans, pooled metrics vs a direct computation; `cavlog evaluate`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import cavlog_core.cli as cli
from cavlog_core.checkpoint import LoadedCheckpoint, save_checkpoint
from cavlog_core.config import RunConfig, TrainConfig
from cavlog_core.data.io import find_cases, load_case
from cavlog_core.data.preprocess import prepare_slices, select_slices
from cavlog_core.data.splits import split_cases
from cavlog_core.errors import CavlogError, InputFileError
from cavlog_core.evaluate import ORACLE_NOTE, evaluate, run_evaluate
from cavlog_core.maps.normalize import normalize_maps
from cavlog_core.methods import get_method
from cavlog_core.metrics import binary_scores, pixel_metrics
from helpers import CONFIG, ImageIsTheMap

SHAPE = (30, 28, 12)
THRESHOLDS = {"healthy_p85": 0.35, "healthy_p95": 0.55}


def _fake(config: RunConfig = CONFIG) -> LoadedCheckpoint:
    method = ImageIsTheMap(config)
    return LoadedCheckpoint(method, method.build(), config, dict(THRESHOLDS), {"path": "fake.pt"})


@pytest.fixture
def dataset(tmp_path, make_case):
    root = tmp_path / "data"
    for i in range(3):
        make_case(f"CASE_{i}", root=root, shape=SHAPE, seed=i)
    make_case("HEALTHY", root=root, shape=SHAPE, lesion=False)
    return root


def _expected(root, ids, spec="central:4", all_pixels=False):
    """Scores computed directly: the fake map is an increasing affine map of the image."""
    scores, labels, per_scan = [], [], {}
    for cid in ids:
        case = load_case(root / cid)
        z = select_slices(case.brain_mask, spec)
        b = prepare_slices(case, CONFIG.preprocess, z)
        s = normalize_maps(torch.from_numpy(b.images), torch.from_numpy(b.brain),
                           erosion=CONFIG.preprocess.mask_erosion).numpy()
        region = np.ones_like(b.brain) if all_pixels else b.brain
        scores.append(s[region])
        labels.append(b.lesion[region])
        per_scan[cid] = binary_scores(s[region] >= 0.5, b.lesion[region])["dice"]
    return np.concatenate(scores), np.concatenate(labels), per_scan


def test_evaluate_pooled_metrics_strategies_and_skips(dataset):
    events = []
    # fp32: the expected scores below are computed in fp32 (bf16 on some CPUs under "auto").
    gen = evaluate(_fake(), dataset, split="all", slices="central:4", device="cpu", batch_size=3,
                   precision="fp32")
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            report = stop.value
            break
    assert [e.done for e in events] == [1, 2, 3, 4] and all(e.total == 4 for e in events)
    assert [e.case_id for e in events if e.skipped] == ["HEALTHY"]
    assert report.cases == ["CASE_0", "CASE_1", "CASE_2"]
    assert "lesion fraction 0.000%" in report.skipped["HEALTHY"]

    scores, labels, per_scan = _expected(dataset, report.cases)
    want = pixel_metrics(scores, labels, exact=True)
    for key in ("auroc", "auprc", "average_precision", "n_pixels", "n_positive"):
        assert report.pixel[key] == pytest.approx(want[key], abs=1e-6), key
    assert report.pixel["exact"] and report.pixel["auroc"] > 0.9  # the lesion is bright
    op = report.operating_point
    assert op["note"] == ORACLE_NOTE and op["dice_best"] == pytest.approx(want["dice_best"])
    assert list(report.strategies) == ["fixed_0.5", "healthy_p85", "healthy_p95"]
    fixed = report.strategies["fixed_0.5"]
    assert fixed["dice"] == pytest.approx(binary_scores(scores >= 0.5, labels)["dice"])
    assert report.strategies["healthy_p95"]["threshold"] == 0.55
    scan = np.array([per_scan[c] for c in report.cases])
    assert fixed["dice_per_scan_mean"] == pytest.approx(scan.mean())
    assert fixed["dice_per_scan_std"] == pytest.approx(scan.std())
    assert report.per_scan_dice["CASE_1"]["fixed_0.5"] == pytest.approx(per_scan["CASE_1"])
    # Exact metrics: per-scan Dice at the oracle threshold too.
    oracle = [report.per_scan_dice[c]["oracle"] for c in report.cases]
    assert op["dice_per_scan_mean"] == pytest.approx(np.mean(oracle))
    case0 = _expected(dataset, ["CASE_0"])
    assert oracle[0] == pytest.approx(
        binary_scores(case0[0] >= op["threshold_best"], case0[1])["dice"])

    d = report.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON
    assert d["operating_point"]["note"] == ORACLE_NOTE and "pr_curve" not in d
    md = report.to_markdown()
    assert "oracle" in md and "| healthy_p85 |" in md and "AUROC" in md
    rec, prec, thr = report.pr_curve
    assert len(rec) == len(prec) == len(thr) > 2 and rec[-1] == 1.0

    everything = run_evaluate(_fake(), dataset, split="all", slices="central:4", all_pixels=True,
                              device="cpu")
    assert everything.pixel["n_pixels"] == 3 * 4 * CONFIG.model.resolution ** 2
    assert everything.pixels == "all"
    # Over the exact limit: streaming histogram, within its reported bound, no per-scan oracle.
    binned = run_evaluate(_fake(), dataset, split="all", slices="central:4", device="cpu",
                          exact_limit=1000, precision="fp32")
    assert not binned.pixel["exact"] and "dice_per_scan_mean" not in binned.operating_point
    for key in ("auroc", "auprc", "average_precision"):
        assert abs(binned.pixel[key] - want[key]) <= binned.pixel["error_bound"] + 1e-12
    assert binned.strategies["fixed_0.5"] == report.strategies["fixed_0.5"]


def test_evaluate_uses_the_training_split_and_reports_errors(dataset, tmp_path, make_case):
    ids = [f.case_id for f in find_cases(dataset)]
    cfg = dataclasses.replace(CONFIG, train=TrainConfig(split_fractions=(0.5, 0.0, 0.5), seed=3))
    report = run_evaluate(_fake(cfg), dataset, split="test", slices="central:4", device="cpu")
    test_ids = split_cases(ids, (0.5, 0.0, 0.5), 3)["test"]
    assert sorted(report.cases + list(report.skipped)) == test_ids
    # Default fractions with 4 cases leave the test split empty: one line, no traceback.
    with pytest.raises(CavlogError, match=r"the test split is empty \(4 cases"):
        run_evaluate(_fake(), dataset, device="cpu")
    make_case("NOSEG", root=tmp_path / "other", shape=SHAPE, seg=False)
    with pytest.raises(InputFileError, match="NOSEG has no ground-truth"):
        run_evaluate(_fake(), tmp_path / "other", split="all", device="cpu")
    healthy_only = tmp_path / "healthy"
    make_case("H1", root=healthy_only, shape=SHAPE, lesion=False)
    with pytest.raises(CavlogError, match="no scan of the all split has a lesion fraction"):
        run_evaluate(_fake(), healthy_only, split="all", device="cpu")


def test_auto_split_is_the_test_split_only_on_the_training_data(dataset, tmp_path):
    from cavlog_core.evaluate import resolve_split

    loaded = _fake()
    loaded.meta["extra"] = {"data": str(dataset)}
    split, note = resolve_split("auto", dataset, loaded, 4)
    assert split == "test" and "held-out test split" in note
    split, note = resolve_split("auto", tmp_path / "elsewhere", loaded, 3)
    assert split == "all" and f"trained on {dataset}" in note and "all 3 case(s)" in note
    assert resolve_split("val", tmp_path, loaded, 3) == ("val", "")
    loaded.meta.pop("extra")
    assert resolve_split("auto", dataset, loaded, 4)[0] == "all"  # unknown training data


def test_cli_evaluate_writes_json_and_prints_table(dataset, tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    cfg = dataclasses.replace(CONFIG, train=TrainConfig(split_fractions=(0.5, 0.0, 0.5)))
    method = get_method("constrained")(cfg)
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoint.pt", method=method,
                           modules=method.build(), thresholds=THRESHOLDS)
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("evaluate",))
    out = tmp_path / "report.json"
    code = cli.main(["evaluate", str(ckpt), str(dataset), "--out", str(out), "--slices",
                     "central:3", "--device", "cpu"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    report = json.loads(out.read_text())
    # The checkpoint does not record DATA as its training data: every case is evaluated, and
    # the output says so.
    assert report["split"] == "all" and report["slices"] == "central:3"
    assert "is not this model's training data" in report["split_note"]
    assert "evaluating all 4 case(s)" in stdout
    assert report["operating_point"]["note"] == ORACLE_NOTE
    assert set(report["strategies"]) == {"fixed_0.5", "healthy_p85", "healthy_p95"}
    assert 0.0 <= report["auroc"] <= 1.0
    assert f"best F1 — {ORACLE_NOTE}" in stdout and "| fixed_0.5 |" in stdout
    # Bad input: one line on stderr, exit 2.
    code = cli.main(["evaluate", str(ckpt), str(dataset), "--out", str(tmp_path / "r.txt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "must end in .json" in err
