"""Make docs/napari.png: the plugin on a case with the anomaly overlay, the mask and the scores.

Runs the "Anomaly segmentation" widget exactly as a user would (real inference in a worker
thread), picks the threshold (ground-truth operating point when the case has ground truth,
otherwise the checkpoint's healthy p95), moves to the axial slice with the largest lesion (or
mask) and grabs the whole window. Needs a display: on a headless machine run it under Xvfb::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/napari_screenshot.py \
        [--checkpoint RUN/checkpoint.pt] [--case ../shared/data/brats2013/BraTS2013_HG_0004]

Without ``--checkpoint`` the built-in demo weights (``napari_cavlog/weights/demo.pt``) are
used; without ``--case`` the plugin's synthetic sample case.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="model checkpoint (default: the built-in demo weights)")
    p.add_argument("--case", type=Path, default=None,
                   help="case folder or NIfTI file (default: the synthetic sample case)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "napari.png")
    p.add_argument("--device", default="auto")
    p.add_argument("--threshold", default=None,
                   help="'gt', 'healthy' (the widget's start: FPR 1 %%, else p95), or a number "
                        "(default: gt if there is ground truth, else healthy)")
    p.add_argument("--size", default="1600x1000", help="window size WIDTHxHEIGHT in pixels")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from napari_cavlog import demo_checkpoint_path

    checkpoint = args.checkpoint or demo_checkpoint_path()
    if not Path(checkpoint).is_file():
        print(f"napari_screenshot: {checkpoint}: checkpoint not found (train the demo weights "
              "with scripts/train_demo_weights.py or pass --checkpoint)", file=sys.stderr)
        return 2
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"napari_screenshot: --size {args.size!r}: expected WIDTHxHEIGHT", file=sys.stderr)
        return 2

    import matplotlib.pyplot as plt
    import napari

    from cavlog_core._atomic import atomic_path
    from napari_cavlog import AnomalyWidget
    from napari_cavlog._qt.common import wait_until
    from napari_cavlog._sample_data import synthetic_case

    viewer = napari.Viewer(title="napari-cavlog")
    viewer.window.resize(width, height)
    if args.case is None:
        for data, kwargs, kind in synthetic_case():
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    else:
        viewer.open(str(args.case), plugin="napari-cavlog")
    widget = AnomalyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Anomaly segmentation", area="right")
    widget.set_checkpoint(checkpoint, label=Path(checkpoint).name)
    widget.device_combo.setCurrentText(args.device)
    widget.run(block=True)
    if widget.analysis is None:
        print(f"napari_screenshot: run failed: {widget.status.text()}", file=sys.stderr)
        viewer.close()
        return 1
    analysis = widget.analysis
    choice = args.threshold or ("gt" if analysis.gt_threshold is not None else "healthy")
    if choice == "gt" and analysis.gt_threshold is not None:
        widget.gt_button.click()
    elif choice not in ("gt", "healthy"):
        widget.threshold = float(choice)
    gt = analysis.cache.gt
    focus = gt if gt is not None and gt.any() else widget.mask_layer.data
    z = int(np.argmax(np.asarray(focus).reshape(focus.shape[0], -1).sum(axis=1)))
    viewer.dims.set_current_step(0, z)
    if widget.gt_combo.layer() is not None:  # the expert outline above the results
        gt_layer = widget.gt_combo.layer()
        viewer.layers.move(viewer.layers.index(gt_layer), len(viewer.layers))
    viewer.layers.selection.active = widget.anomaly_layer
    viewer.reset_view()
    wait_until(lambda: False, timeout=1.0)  # let Qt lay out and draw everything
    shot = viewer.screenshot(canvas_only=False, flash=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        plt.imsave(tmp, shot, format="png")
    scores = widget.metrics
    text = "" if scores is None else ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
    print(f"{args.out}: {shot.shape[1]}x{shot.shape[0]}, slice z={z}, "
          f"threshold {widget.threshold:.3f} {text}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
