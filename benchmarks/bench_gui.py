"""GUI inference against ``cavlog predict`` on the same 240x240x155 volume, side by side.

Usage (needs a display; on a headless machine under Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_gui.py \
        [--case CASE_FOLDER] [--checkpoint CKPT] [--repeats 3]

Alternates the two paths ``--repeats`` times and reports the best wall time of each and their
ratio (the machine may be shared: the ratio is what counts). CLI: ``cavlog predict`` in this
process (read NIfTI, infer, write anomaly / mask NIfTI and the lesion CSV). GUI: the anomaly
widget's ``run(layer)`` under napari's event loop, on the case opened by the plugin's reader
(infer, stream the slices into the layer, build the threshold cache, apply the starting
threshold, lesion table).
Target (issue 12): the GUI within 20 % of the CLI.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", type=Path, default=None,
                   help="case folder (default: a synthetic glioma case at 240x240x155)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the demo weights")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import napari

    from cavlog_core import cli
    from cavlog_core.synth import generate_subject, write_subject
    from napari_cavlog import AnomalyWidget, demo_checkpoint_path

    tmp = Path(tempfile.mkdtemp(prefix="bench-gui-"))
    case = args.case
    if case is None:
        case = tmp / "SYN_0001"
        write_subject(generate_subject(1, (240, 240, 155)), case, "SYN_0001")
    ckpt = args.checkpoint or demo_checkpoint_path()

    viewer = napari.Viewer()
    layers = viewer.open(str(case), plugin="napari-cavlog")
    flair = layers[0]
    widget = AnomalyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(ckpt)
    widget.device_combo.setCurrentText(args.device)

    def run_cli(k: int) -> float:
        tic = time.perf_counter()
        code = cli.main(["predict", str(ckpt), str(case), "--out", str(tmp / f"pred{k}"),
                         "--device", args.device])
        assert code == 0
        return time.perf_counter() - tic

    from qtpy.QtCore import QEventLoop

    def run_gui() -> float:
        # napari's own event loop runs while the worker computes (not a polling wait).
        loop = QEventLoop()
        tic = time.perf_counter()
        worker = widget.run(flair)
        worker.finished.connect(loop.quit)
        loop.exec()
        widget.flush()  # the lesion table and full labels are part of the result
        seconds = time.perf_counter() - tic
        assert widget.analysis is not None, widget.status.text()
        return seconds

    run_gui()  # warm-up: imports, first model load, GPU textures
    run_cli(-1)
    cli_s, gui_s = [], []
    for k in range(args.repeats):
        cli_s.append(run_cli(k))
        gui_s.append(run_gui())
    best_cli, best_gui = min(cli_s), min(gui_s)
    shape = tuple(flair.data.shape)
    print(f"volume {shape} display order, checkpoint {ckpt.name}, device {args.device}")
    print(f"cavlog predict : {best_cli:.2f} s (runs: {', '.join(f'{s:.2f}' for s in cli_s)})")
    print(f"GUI run        : {best_gui:.2f} s (runs: {', '.join(f'{s:.2f}' for s in gui_s)})")
    print(f"GUI / CLI      : {best_gui / best_cli:.2f} (target <= 1.20)")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
