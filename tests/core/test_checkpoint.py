"""Checkpoints: round trip, exact resume, and one-line errors for corrupt or foreign files."""

import pickle

import numpy as np
import pytest
import torch

from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from cavlog_core.data import SliceArrays
from cavlog_core.errors import InputFileError
from cavlog_core.methods import get_method
from cavlog_core.training import fit, load_checkpoint, read_checkpoint, run_fit, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def slices(n: int, r: int = 64) -> SliceArrays:
    g = np.random.default_rng(1)
    brain = np.zeros((n, 1, r, r), bool)
    brain[:, :, r // 4: 3 * r // 4, r // 4: 3 * r // 4] = True
    img = np.where(brain, g.uniform(0.3, 0.9, brain.shape), 0).astype(np.float16)
    return SliceArrays(img, brain, None, np.zeros(n, np.int64), np.arange(n), ("sq",))


def config(**train) -> RunConfig:
    opts = {"iterations": 6, "warmup_iterations": 2, "batch_size": 4, "lr": 1e-3,
            "checkpoint_every": 3, "device": "cpu", **train}
    return RunConfig(preprocess=PreprocessConfig(resolution=64),
                     model=ModelConfig(resolution=64, width=0.125),
                     train=TrainConfig(**opts))


def test_round_trip(tmp_path):
    cfg = config()
    method = get_method("constrained")(cfg)
    modules = method.build()
    opts = method.optimizers(modules)
    thresholds = {"healthy_p85": 0.5, "healthy_p99": 0.9}
    path = save_checkpoint(tmp_path / "c.pt", method=method, modules=modules, optimizers=opts,
                           iteration=3, total_iterations=6, thresholds=thresholds,
                           healthy_fc_satisfied=0.75)
    assert not list(tmp_path.glob(".c-*"))  # no temporary left behind
    ck = load_checkpoint(path, device="cpu")
    assert ck.config == cfg and ck.method.name == "constrained"
    assert ck.thresholds == thresholds
    assert ck.meta["iteration"] == 3 and ck.meta["healthy_fc_satisfied"] == 0.75
    assert ck.meta["versions"]["torch"] == str(torch.__version__)
    assert ck.meta["preprocess"]["resolution"] == 64
    assert not ck.model.training and ck.model is ck.modules["model"]
    for k, v in modules.state_dict().items():
        assert torch.equal(v, ck.modules.state_dict()[k]), k
    raw = read_checkpoint(path)
    assert set(raw["optimizers"]) == {"model"} and raw["rng"] == {}


def _final_state(path):
    return load_checkpoint(path).modules.state_dict()


def test_resume_gives_identical_weights(tmp_path):
    data = slices(12)
    full = run_fit(config(), data, out_dir=tmp_path / "full")

    gen = fit(config(), data, out_dir=tmp_path / "part")
    for event in gen:
        if event.phase == "constrained" and event.iteration == 3:
            break  # interrupted right after checkpoint 3 was written
    gen.close()
    assert read_checkpoint(tmp_path / "part" / "checkpoint.pt")["iteration"] == 3

    events = []
    gen = fit(config(lr=0.5, device="cpu"), data, out_dir=tmp_path / "part", resume=True)
    events.extend(gen)
    steps = [e.iteration for e in events if e.phase in ("warmup", "constrained")]
    assert steps == [4, 5, 6]
    assert events[0].lr == 1e-3  # the stored config wins over the one passed

    a, b = _final_state(full.checkpoint_path), _final_state(tmp_path / "part" / "checkpoint.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (tmp_path / "part" / "log.jsonl").read_text().splitlines()
    assert '"iteration": 4' in "".join(log)  # appended, not truncated
    assert '"iteration": 1' in "".join(log)


def test_corrupt_foreign_and_unsafe_files_fail_with_one_line(tmp_path):
    cfg = config()
    method = get_method("constrained")(cfg)
    good = save_checkpoint(tmp_path / "good.pt", method=method, modules=method.build())

    cases = {}
    cases["missing.pt"] = None
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01garbage" * 10)
    cases["garbage.pt"] = "not a readable PyTorch checkpoint"
    blob = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    cases["truncated.pt"] = "not a readable PyTorch checkpoint"
    torch.save({"weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    cases["foreign.pt"] = "not a cavlog checkpoint"

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(tmp_path / "pickle.pt", "wb") as f:
        pickle.dump({"format": "cavlog-checkpoint", "x": Evil()}, f, protocol=2)
    cases["pickle.pt"] = "not a readable PyTorch checkpoint|pickled"
    torch.save({"format": "cavlog-checkpoint", "version": 1, "x": Evil()}, tmp_path / "evil.pt")
    cases["evil.pt"] = "refusing to load"

    # weights of another architecture: the stored config says width 0.25
    payload = torch.load(good, weights_only=True)
    payload["config"]["model"]["width"] = 0.25
    torch.save(payload, tmp_path / "arch.pt")
    cases["arch.pt"] = "another architecture for 'model'"
    payload = torch.load(good, weights_only=True)
    payload["method"] = "no-such-method"
    torch.save(payload, tmp_path / "method.pt")
    cases["method.pt"] = "unknown"

    for name, pattern in cases.items():
        with pytest.raises(InputFileError) as err:
            load_checkpoint(tmp_path / name)
        msg = str(err.value)
        assert "\n" not in msg and str(tmp_path / name) in msg, msg
        if pattern:
            assert any(p in msg for p in pattern.split("|")), msg


@pytest.mark.parametrize("deferred", [False, True])
def test_closing_fit_early_leaves_a_resumable_checkpoint(tmp_path, monkeypatch, deferred):
    """A cancelled run (generator closed after iteration k) is saved at k and resumes to the end.

    ``deferred``: the logs are read only when due (the GPU path), so iterations 2-3 are unread.
    """
    import importlib

    import numpy as np
    import torch

    from cavlog_core import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
    from cavlog_core._progress import drain
    from cavlog_core.checkpoint import read_checkpoint
    from cavlog_core.data.dataset import SliceArrays
    from cavlog_core.training.fit import fit

    torch.manual_seed(0)
    r = 64
    yy, xx = np.mgrid[:r, :r]
    disk = ((yy - r / 2) ** 2 + (xx - r / 2) ** 2) < (r * 0.4) ** 2
    images = np.stack([disk * (0.5 + 0.1 * i / 16) for i in range(16)])[:, None].astype(np.float32)
    arrays = SliceArrays(images=images, brain=np.repeat(disk[None, None], 16, 0),
                         lesion=None, case_index=np.zeros(16, np.int64),
                         z=np.arange(16, dtype=np.int64), case_ids=("c0",))
    config = RunConfig(preprocess=PreprocessConfig(resolution=r, slices="brain"),
                       model=ModelConfig(resolution=r, width=0.125),
                       train=TrainConfig(iterations=6, warmup_iterations=2, batch_size=4,
                                         device="cpu", checkpoint_every=1000))
    if deferred:
        fit_module = importlib.import_module("cavlog_core.training.fit")
        monkeypatch.setattr(fit_module, "_reads_every_iteration", lambda device: False)
    gen = fit(config, arrays, out_dir=tmp_path)
    done = 0
    for event in gen:
        if event.phase in ("warmup", "constrained"):
            done = event.iteration
            if done == 3:
                break
    gen.close()
    payload = read_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["iteration"] == 3
    result = drain(fit(config, arrays, out_dir=tmp_path, resume=True))
    assert result.iterations == 6
    assert read_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 6


def test_with_map_flips_changes_the_map_not_the_weights(tmp_path):
    from cavlog_core.errors import CavlogError
    from napari_fixtures import make_tiny_checkpoint

    loaded = load_checkpoint(make_tiny_checkpoint(tmp_path / "tiny.pt"))
    two = loaded.with_map_flips(2)
    assert two.config.model.map_flips == two.method.config.model.map_flips == 2
    assert loaded.config.model.map_flips == 1 and two.modules is loaded.modules
    assert two.thresholds == loaded.thresholds
    with pytest.raises(CavlogError, match="map_flips=3"):
        loaded.with_map_flips(3)
