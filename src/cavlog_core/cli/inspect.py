"""``cavlog inspect PATH``: what the loader sees in a case folder, NIfTI file or dataset root."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PreprocessConfig
from ..data.io import Case, CaseFiles, find_cases, load_case
from ..data.preprocess import select_slices
from ..data.splits import keep_for_evaluation, lesion_fraction
from ._common import PRE, add_slices_option, existing_path

HELP = "show cases, shapes, orientation, intensities, labels and the slices that would be used"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``cavlog inspect`` (its options and help) on ``subparsers``."""
    p = subparsers.add_parser("inspect", help=HELP, description=HELP.capitalize() + ".")
    p.add_argument("path", type=existing_path, metavar="PATH",
                   help="a dataset root, a case folder or a .nii/.nii.gz file")
    add_slices_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return p


def _ranges(z: np.ndarray) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    if z.size == 0:
        return "none"
    breaks = np.flatnonzero(np.diff(z) != 1)
    starts = np.concatenate([[z[0]], z[breaks + 1]])
    ends = np.concatenate([z[breaks], [z[-1]]])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, ends))


def describe_case(files: CaseFiles, case: Case, cfg: PreprocessConfig) -> dict[str, Any]:
    """Facts about one loaded case, JSON-friendly."""
    z = select_slices(case.brain_mask, cfg.slices, min_brain_fraction=cfg.min_brain_fraction)
    brain_values = case.flair[case.brain_mask]
    p1, p99 = np.percentile(brain_values, cfg.percentiles)
    header = case.geometry.header
    info: dict[str, Any] = {
        "case_id": case.case_id,
        "path": str(files.path),
        "files": [p.name for p in files.files()],
        "shape": list(case.shape),
        "spacing_mm": [round(s, 4) for s in case.spacing],
        "orientation_on_disk": "".join(case.geometry.axcodes),
        "dtype_on_disk": None if header is None else str(header.get_data_dtype()),
        "brain_voxels": int(np.count_nonzero(case.brain_mask)),
        "brain_mask": "file" if files.brain_mask is not None else "computed",
        "intensity_brain": {"min": float(brain_values.min()), "max": float(brain_values.max()),
                            f"p{cfg.percentiles[0]:g}": float(p1),
                            f"p{cfg.percentiles[1]:g}": float(p99)},
        "labels": None if case.seg is None else [int(v) for v in np.unique(case.seg)],
        "lesion_fraction": None,
        "lesion_fraction_selected": None,
        "slices_spec": cfg.slices,
        "slices": [int(v) for v in z],
        "lesion_free_slices": None,
        "kept_for_evaluation": None,
        "lesion_area_mm2": None,
    }
    if case.seg is not None:
        pixel_mm2 = float(case.spacing[0] * case.spacing[1])
        per_slice = np.count_nonzero((case.seg[:, :, z] > 0) & case.brain_mask[:, :, z],
                                     axis=(0, 1)) * pixel_mm2
        info["lesion_area_mm2"] = [round(float(v), 1) for v in per_slice]
        info["lesion_fraction"] = lesion_fraction(case)
        info["lesion_fraction_selected"] = lesion_fraction(case, z)
        info["lesion_free_slices"] = int((~(case.seg[:, :, z] > 0).any(axis=(0, 1))).sum())
        info["kept_for_evaluation"] = keep_for_evaluation(
            case, z, min_lesion_fraction=cfg.min_lesion_fraction)
    return info


def _text_block(info: dict[str, Any], cfg: PreprocessConfig) -> str:
    it = info["intensity_brain"]
    lo_key, hi_key = (k for k in it if k.startswith("p"))
    lines = [
        f"{info['case_id']}  ({info['path']})",
        f"  files        : {', '.join(info['files'])}",
        f"  shape        : {' x '.join(map(str, info['shape']))} "
        "(canonical RAS, axial = last axis)",
        f"  spacing      : {' x '.join(f'{s:g}' for s in info['spacing_mm'])} mm",
        f"  orientation  : {info['orientation_on_disk']} on disk -> RAS; "
        f"stored as {info['dtype_on_disk']}",
        f"  intensity    : brain min {it['min']:.4g}, max {it['max']:.4g}, "
        f"{lo_key} {it[lo_key]:.4g}, {hi_key} {it[hi_key]:.4g}",
        f"  brain        : {info['brain_voxels']} voxels ({info['brain_mask']} mask)",
    ]
    if info["labels"] is None:
        lines.append("  labels       : none (no ground truth)")
    else:
        lines += [
            f"  labels       : {', '.join(map(str, info['labels']))}",
            f"  lesion       : {100 * info['lesion_fraction']:.2f} % of the brain, "
            f"{100 * info['lesion_fraction_selected']:.2f} % over the selected slices "
            f"({'kept' if info['kept_for_evaluation'] else 'dropped'} for evaluation, "
            f"threshold {100 * cfg.min_lesion_fraction:g} %)",
        ]
        area = np.asarray(info["lesion_area_mm2"], dtype=float)
        if area.size:
            lines.append(f"  lesion area  : {area.min():.0f} / {np.median(area):.0f} / "
                         f"{area.max():.0f} mm² per selected slice (min / median / max)")
    z = np.asarray(info["slices"], dtype=np.int64)
    extra = "" if info["lesion_free_slices"] is None else \
        f", {info['lesion_free_slices']} lesion-free"
    lines.append(f"  slices       : {info['slices_spec']} -> z {_ranges(z)} "
                 f"({z.size} slices{extra})")
    return "\n".join(lines)


def summarize(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset-level counts over the inspected cases."""
    with_gt = [i for i in infos if i["labels"] is not None]
    shapes = sorted({tuple(i["shape"]) for i in infos})
    fr = [i["lesion_fraction"] for i in with_gt]
    # Lesion size statistics over the cases that have a lesion on the selected slices.
    sick = [i for i in with_gt if i["lesion_fraction_selected"]]
    sel = [i["lesion_fraction_selected"] for i in sick]
    areas = np.asarray([a for i in sick for a in i["lesion_area_mm2"]], dtype=float)
    return {
        "cases": len(infos),
        "with_ground_truth": len(with_gt),
        "shapes": [list(s) for s in shapes],
        "selected_slices": int(sum(len(i["slices"]) for i in infos)),
        "lesion_free_selected_slices": int(sum(i["lesion_free_slices"] for i in with_gt)),
        "kept_for_evaluation": int(sum(bool(i["kept_for_evaluation"]) for i in with_gt)),
        "lesion_fraction_mean": float(np.mean(fr)) if fr else None,
        "cases_with_lesion_selected": len(sick),
        "lesion_fraction_selected": _spread(np.asarray(sel, dtype=float)),
        "lesion_area_mm2_per_slice": _spread(areas),
    }


def _spread(values: np.ndarray) -> dict[str, float] | None:
    """``min / median / mean / max`` of a non-empty array, else None."""
    if values.size == 0:
        return None
    return {"min": float(values.min()), "median": float(np.median(values)),
            "mean": float(values.mean()), "max": float(values.max())}


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog inspect`` with parsed ``args``; return the exit status."""
    cfg = PreprocessConfig(slices=args.slices, min_brain_fraction=PRE.min_brain_fraction)
    path = Path(args.path)
    files = find_cases(path)
    infos = []
    for f in files:
        info = describe_case(f, load_case(f), cfg)
        infos.append(info)
        if not args.json:
            print(_text_block(info, cfg), flush=True)
    summary = summarize(infos)
    if args.json:
        print(json.dumps({"path": str(path), "cases": infos, "summary": summary}, indent=2))
        return 0
    if len(infos) > 1:
        s = summary
        shapes = "; ".join(" x ".join(map(str, sh)) for sh in s["shapes"])
        mean = "n/a" if s["lesion_fraction_mean"] is None else \
            f"{100 * s['lesion_fraction_mean']:.2f} %"
        print(f"summary: {s['cases']} cases ({s['with_ground_truth']} with ground truth), "
              f"shapes {shapes}; {s['selected_slices']} selected slices "
              f"({s['lesion_free_selected_slices']} lesion-free); "
              f"{s['kept_for_evaluation']} kept for evaluation; mean lesion fraction {mean}")
        sel, area = s["lesion_fraction_selected"], s["lesion_area_mm2_per_slice"]
        if sel is not None and area is not None:
            print(f"lesion on the selected slices ({cfg.slices}, "
                  f"{s['cases_with_lesion_selected']} cases with a lesion there): "
                  f"{100 * sel['min']:.1f} / "
                  f"{100 * sel['median']:.1f} / {100 * sel['max']:.1f} % of brain pixels per "
                  f"case, {area['min']:.0f} / {area['median']:.0f} / {area['max']:.0f} mm² per "
                  "slice (min / median / max)")
    return 0
