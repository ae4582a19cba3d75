"""Bad configs, command lines and checkpoints are refused before anything runs, with an error of the
right type that names the argument (and, for checkpoints, never passes on torch's advice to load with
weights_only=False)."""

import os
import time

import pytest
import torch

from s2r2lib import probe
from s2r2lib.models import build_model
from s2r2lib.train import TrainConfig, _checked_crops, _config_difference, load_checkpoint, main, save_checkpoint

BILLION_LAUGHS = "".join(  # a valid field holding 9 levels of 9 aliases: 9^9 values once expanded, in 428 bytes
    ["data_options:\n", f"  a: &a [{', '.join(['lol'] * 9)}]\n"]
    + [f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")])


def resolved(*assignments, **fields):
    """A config from fields and command-line style overrides, resolved (every check run)."""
    return TrainConfig(**fields).with_overrides(list(assignments)).resolved()


def config_file(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return TrainConfig.from_yaml(path)


def one_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def checkpoint(tmp_path, **fields):
    """A checkpoint as s2r2lib.train writes one (untrained weights), of a config with ``fields``."""
    config = TrainConfig(**fields).resolved()
    path = tmp_path / "checkpoint.pt"
    model = build_model(config.arch, small_input=config.small_input, proj_dim=config.proj_dim)
    save_checkpoint(path, {"model": model.state_dict(), "config": config.to_dict(), "step": 0})
    return path


def without_encoder_fields(tmp_path):
    """A checkpoint whose config has small_input but neither arch nor proj_dim (not written by s2r2lib.train)."""
    path = checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["config"] = {k: v for k, v in state["config"].items() if k not in ("arch", "proj_dim")}
    torch.save(state, path)
    return path


def evil_pickle(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "step": Payload()}, path)
    return path


def random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(4096))
    return path


# (case, thunk(tmp_path, monkeypatch), exception type, text the message must hold: the argument's name)
CASES = [
    # Types, from the command line, a YAML file and Python (YAML 1.1 leaves 1e-3 a string: coerced, not refused)
    ("images_per_batch=2.5", lambda t, m: resolved("images_per_batch=2.5"), TypeError, "images_per_batch"),
    ("seed=abc", lambda t, m: resolved("seed=abc"), TypeError, "seed"),
    ("keep_steps=abc", lambda t, m: resolved("keep_steps=abc"), TypeError, "keep_steps"),
    ("data_options=5", lambda t, m: resolved("data_options=5"), TypeError, "data_options"),
    ("small_input=1", lambda t, m: resolved("small_input=1"), TypeError, "small_input"),
    ("lr=abc", lambda t, m: resolved("lr=abc"), TypeError, "lr"),
    ("method as a list", lambda t, m: resolved("method=[s2r2]"), TypeError, "method"),
    ("keep_steps=[1.5]", lambda t, m: resolved("keep_steps=[1.5]"), TypeError, "keep_steps"),
    ("data_options with a number key", lambda t, m: resolved("data_options={1: 2}"), TypeError, "data_options"),
    ("epochs: null in a file", lambda t, m: config_file(t, "epochs: null\n"), TypeError, "epochs"),
    ("view_size as text in a file", lambda t, m: config_file(t, "view_size: large\n"), TypeError, "view_size"),
    ("channels_last=None in Python", lambda t, m: TrainConfig.from_dict({"channels_last": None}), TypeError,
     "channels_last"),
    ("a misspelt field", lambda t, m: config_file(t, "methdo: simclr\n"), ValueError, "methdo"),
    ("an override without =", lambda t, m: resolved("lr"), ValueError, "lr"),
    ("a file that is a list", lambda t, m: config_file(t, "- lr: 0.1\n"), ValueError, "config"),
    ("a billion-laughs file", lambda t, m: config_file(t, BILLION_LAUGHS), ValueError,
     "alias"),
    ("a billion-laughs file, named", lambda t, m: config_file(t, BILLION_LAUGHS), ValueError,
     "run.yaml expands to more than"),  # "config <its path> expands ..."
    ("a recursive alias", lambda t, m: resolved("crops=&c [*c]"), ValueError, "alias"),
    # SwAV's crops
    ("crops=5", lambda t, m: resolved("crops=5"), TypeError, "crops"),
    ("a crop without scales", lambda t, m: resolved("crops=[[2, 32]]"), ValueError, "crops"),
    ("a crop count as text", lambda t, m: resolved("crops=[[two, 32, [0.14, 1.0]]]"), ValueError, "crops"),
    ("a crop of 0 views", lambda t, m: resolved("crops=[[0, 32, [0.14, 1.0]]]"), ValueError, "crops"),
    ("crop scales reversed", lambda t, m: resolved("crops=[[2, 32, [1.0, 0.14]]]"), ValueError, "crops"),
    ("swav with 1 large crop", lambda t, m: resolved("method=swav", "crops=[[1, 32, [0.14, 1.0]]]"), ValueError,
     "crops"),
    # Ranges
    ("lr=-1", lambda t, m: resolved("lr=-1"), ValueError, "lr"),
    ("lr=inf", lambda t, m: resolved("lr=.inf"), ValueError, "lr"),
    ("lr=nan", lambda t, m: resolved("lr=nan"), ValueError, "lr"),
    ("LARS with a negative lr", lambda t, m: resolved("method=swav", "lr=-0.5"), ValueError, "lr"),
    ("tau=0", lambda t, m: resolved("tau=0"), ValueError, "tau"),
    ("tau=inf", lambda t, m: resolved("tau=inf"), ValueError, "tau"),
    ("epsilon=0", lambda t, m: resolved("method=swav", "epsilon=0"), ValueError, "epsilon"),
    ("weight_decay=-0.1", lambda t, m: resolved("weight_decay=-0.1"), ValueError, "weight_decay"),
    ("checkpoint_every=0", lambda t, m: resolved("checkpoint_every=0"), ValueError, "checkpoint_every"),
    ("proj_dim=0", lambda t, m: resolved("proj_dim=0"), ValueError, "proj_dim"),
    ("image_size=0", lambda t, m: resolved("image_size=0", "view_size=0"), ValueError, "image_size"),
    ("max_steps=0", lambda t, m: resolved("max_steps=0"), ValueError, "max_steps"),
    ("keep_steps=[0]", lambda t, m: resolved("keep_steps=[0]"), ValueError, "keep_steps"),
    ("queue_length=-1", lambda t, m: resolved("queue_length=-1"), ValueError, "queue_length"),
    ("a SwAV queue shorter than a batch", lambda t, m: resolved("method=swav", "queue_length=4", "images_per_batch=8"),
     ValueError, "queue_length 4 must be 0 or at least images_per_batch 8"),
    ("knn_every=-1", lambda t, m: resolved("knn_every=-1"), ValueError, "knn_every"),
    # Names: data sets and their options, the device, the output folder
    ("an unknown data set", lambda t, m: resolved("data=imagenet"), ValueError, "data"),
    ("an unknown data option", lambda t, m: resolved("data_options={modes: cluttered}"), ValueError, "modes"),
    ("the loader's root as a data option", lambda t, m: resolved("data_options={root: /data}"), ValueError,
     "data_options ['root'] are not options of data set 'embedded'"),
    ("a crop scale from 0", lambda t, m: resolved("method=swav", "crops=[[2, 32, [0.0, 1.0]]]"), ValueError,
     "crops"),
    ("views larger than the images", lambda t, m: resolved("image_size=32", "view_size=48"), ValueError,
     "view_size 48 is larger than image_size 32; views are crops"),
    ("an unknown kNN data set", lambda t, m: resolved("knn_every=5", "knn_data=imagenet"), ValueError,
     "unknown knn_data 'imagenet'; expected one of"),
    ("a kNN data set without labels", lambda t, m: resolved("knn_every=5", "knn_data=coco"), ValueError,
     "knn_data 'coco' has no labelled train and test splits for the kNN monitor; use one of ['embedded', 'stl10', "
     "'fashion_mnist'], or knn_every=0"),
    ("a folder as the kNN data", lambda t, m: resolved("knn_every=5", "knn_data=folder"), ValueError,
     "knn_data 'folder' has no labelled train and test splits"),
    ("warmup_steps=-5", lambda t, m: resolved("warmup_steps=-5"), ValueError,
     "warmup_steps must be 0 (no warmup) or a number of steps, got -5"),
    ("prototype_freeze_steps=-3", lambda t, m: resolved("method=swav", "prototype_freeze_steps=-3"), ValueError,
     "prototype_freeze_steps must be None (one epoch), 0 or a number of steps, got -3"),
    ("cuda without CUDA", lambda t, m: (m.setattr(torch.cuda, "is_available", lambda: False),
                                        resolved("device=cuda")), ValueError, "cuda"),
    ("cuda:3 with one GPU", lambda t, m: (one_cuda_device(m), resolved("device=cuda:3")), ValueError, "cuda:3"),
    ("cpu:1", lambda t, m: resolved("device=cpu:1"), ValueError, "cpu:1"),
    ("an unknown device", lambda t, m: resolved("device=gpu"), ValueError, "gpu"),
    ("an empty output", lambda t, m: resolved("output=''"), ValueError, "output"),
    ("an output that is a file", lambda t, m: (t.joinpath("f").write_text(""), resolved(f"output={t}/f")),
     ValueError, "output"),
    ("an output under a file", lambda t, m: (t.joinpath("f").write_text(""), resolved(f"output={t}/f/run")),
     ValueError, "output"),
    # Checkpoints
    ("a missing checkpoint", lambda t, m: probe.load_encoder(t / "none.pt"), FileNotFoundError, "checkpoint"),
    ("random bytes as a checkpoint", lambda t, m: probe.load_encoder(random_bytes(t)), ValueError,
     "not a weights-only s2r2 checkpoint"),
    ("a pickle with code, to the probe", lambda t, m: probe.run_config(evil_pickle(t)), ValueError,
     "not a weights-only s2r2 checkpoint"),
    ("a pickle with code, to resume", lambda t, m: load_checkpoint(evil_pickle(t)), ValueError,
     "not a weights-only s2r2 checkpoint"),
    ("a tensor file, not a checkpoint", lambda t, m: (torch.save(torch.zeros(3), t / "x.pt"),
                                                      probe.load_encoder(t / "x.pt")), ValueError, "s2r2 checkpoint"),
    ("small_input against the checkpoint's", lambda t, m: probe.load_encoder(checkpoint(t, small_input=False),
                                                                              small_input=True), ValueError,
     "small_input=False; leave them out (None) to use the checkpoint's own"),
    ("arch against the checkpoint's", lambda t, m: probe.evaluate(checkpoint(t), None, None, None, None, 32,
                                                                   arch="resnet18"), ValueError, "arch"),
    ("proj_dim against the checkpoint's", lambda t, m: probe.load_encoder(checkpoint(t, proj_dim=64), proj_dim=128),
     ValueError, "proj_dim"),
    ("two fields against the checkpoint's", lambda t, m: probe.load_encoder(checkpoint(t, proj_dim=64), "resnet18",
                                                                             proj_dim=128), ValueError,
     "load_encoder: arch='resnet18', proj_dim=128 was asked for, but checkpoint"),
    ("two fields against the checkpoint's, its values", lambda t, m: probe.load_encoder(
        checkpoint(t, proj_dim=64), "resnet18", proj_dim=128), ValueError,
     "was trained with arch='narrow_cnn', proj_dim=64; leave them out (None) to use the checkpoint's own"),
    ("a checkpoint whose config lacks the encoder's fields", lambda t, m: probe.load_encoder(
        without_encoder_fields(t)), ValueError, "its config lacks ['arch', 'proj_dim']; it is not a checkpoint of "
                                                "s2r2lib.train"),
]


@pytest.mark.parametrize("thunk,error,names", [pytest.param(*case, id=name) for name, *case in CASES])
def test_bad_input_is_refused_naming_the_argument(tmp_path, monkeypatch, thunk, error, names):
    with pytest.raises(error) as caught:
        thunk(tmp_path, monkeypatch)
    assert type(caught.value) is error
    message = str(caught.value)
    assert names in message, message
    shown = caught.value.__cause__ or (None if caught.value.__suppress_context__ else caught.value.__context__)
    assert "weights_only=False" not in message + str(shown)  # torch's advice is neither repeated nor chained


def test_an_alias_bomb_is_refused_in_well_under_a_second(tmp_path):
    assert len(BILLION_LAUGHS.encode()) < 500
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"through YAML aliases \(an alias bomb\?\); a config is a mapping of "
                                         r"field: value, so write the values out"):
        config_file(tmp_path, BILLION_LAUGHS)
    assert time.perf_counter() - start < 0.5


def test_a_few_aliases_are_fine(tmp_path):
    config = config_file(tmp_path, "crops: &c [[2, 32, [0.14, 1.0]], [4, 16, [0.05, 0.14]]]\nkeep_steps: &k [2, 4]\n")
    assert config.keep_steps == [2, 4] and config.crops[1] == [4, 16, [0.05, 0.14]]


def test_the_command_line_reports_a_bad_value_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main([f"output={tmp_path / 'run'}", "checkpoint_every=0"])
    assert caught.value.code == 2
    assert "checkpoint_every must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_config_field_present_on_one_side_only_is_a_difference():
    assert _config_difference({"lr": 0.1}, {"lr": 0.1, "tau": 0.01}) == {"tau": (None, 0.01)}
    assert _config_difference({"lr": 0.1, "tau": 0.01}, {"lr": 0.1}) == {"tau": (0.01, None)}
    assert _config_difference({"lr": 0.1, "device": "cpu"}, {"lr": 0.1, "device": "cuda"}) == {}  # a runtime field


def test_the_smallest_valid_crops_are_accepted():
    assert _checked_crops([[1, 1, [1.0, 1.0]], [2, 8, [0.5, 0.5]]]) == [[1, 1, [1.0, 1.0]], [2, 8, [0.5, 0.5]]]


def test_the_command_line_help_names_the_presets(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    words = capsys.readouterr().out.split()
    assert "--preset" in words and " the paper's setting of a Table 1-2 row " in f" {' '.join(words)} "
    assert " --resume continue the run in `output` from its checkpoint " in f" {' '.join(words)} "
    assert " --config CONFIG a YAML file of TrainConfig fields " in f" {' '.join(words)} "


def test_the_first_step_is_a_valid_snapshot_and_step_0_is_not():
    TrainConfig(max_steps=3, keep_steps=[1, 2]).validate()
    with pytest.raises(ValueError, match="keep_steps are step numbers from 1"):
        TrainConfig(max_steps=3, keep_steps=[0]).validate()
