"""Bad input fails early and clearly (exit code 2, message on stderr); Ctrl-C leaves a resumable run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from visprune import shapes
from visprune.apps.cli import main

from helpers import save_llava


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "llava"
    save_llava(path)
    return str(path)


@pytest.fixture
def broken_model(tmp_path):
    """A folder that looks like a model but cannot be loaded: any error about something else proves that
    the settings were checked before loading."""
    path = tmp_path / "broken"
    path.mkdir()
    (path / "config.json").write_text("{ this is not json")
    return str(path)


def _eval(capsys, *args, model=None, out=None):
    argv = ["eval", "--task", "shapes-vqa", "--n", "2", "--quiet", *args]
    if model is not None:
        argv += ["--model", model]
    if out is not None:
        argv += ["--out", str(out)]
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--method", "nope:keep=0.2"], "unknown method 'nope'; valid: none"),
    (["--method", "atp:kep=0.3"], "unknown PruneConfig fields"),
    (["--method", "atp:keep=7"], "keep"),
    (["--method", "atp:keep=0.5", "--method", "atp:keep=0.5"], "duplicate methods"),
    (["--task", "mmbench"], "unknown task 'mmbench'"),
    (["--task", "vqav2"], "needs --questions"),
    (["--task", "gqa", "--questions", "/nonexistent/q.json", "--images", "."], "no such file"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--dtype", "float8"], "--dtype 'float8'"),
    (["--device", "tpu"], "use cpu, cuda"),
    (["--corrupt", "fog:9"], "severity must be 1..5"),
    (["--corrupt", "rain"], "unknown corruption 'rain'; valid: all, gaussian_noise"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--method", "e-adaprune:keep=0.25"], "keep=0.25 does nothing with budget='energy'"),
    (["--method", "atp:k=10,budget=ratio"], "k=10 does nothing with budget='ratio'"),
])
def test_bad_settings_fail_before_loading(capsys, tmp_path, broken_model, args, message):
    out = tmp_path / "out"
    rc, err = _eval(capsys, *args, model=broken_model, out=out)
    assert rc == 2 and message in err and err.startswith("visprune eval: error:")
    assert not out.exists()  # nothing was started


def test_bad_models(capsys, tmp_path, broken_model):
    rc, err = _eval(capsys, model="/nonexistent/model", out=tmp_path / "o")
    assert rc == 2 and "no such folder" in err
    rc, err = _eval(capsys, model=str(tmp_path), out=tmp_path / "o")
    assert rc == 2 and "not a model folder" in err
    rc, err = _eval(capsys, model=broken_model, out=tmp_path / "o")
    assert rc == 2 and "cannot load it" in err
    if not (shapes.CHECKPOINT / "config.json").is_file():
        rc, err = _eval(capsys, model="shapes", out=tmp_path / "o")
        assert rc == 2 and "train_shapes.py" in err


@pytest.mark.parametrize("spec, message", [
    ("cls:layer=-1000", "layer=-1000 is out of range"),
    ("text:text_layer=-1000,text_encoder=/nonexistent/clip", "text_layer=-1000 is out of range"),
    ("text:text_encoder=/nonexistent/clip", "/nonexistent/clip"),
])
def test_bad_method_settings_fail_before_any_sample(capsys, tmp_path, model_dir, spec, message):
    out = tmp_path / "o"
    rc, err = _eval(capsys, "--method", spec, model=model_dir, out=out)
    assert rc == 2 and message in err and f"method {spec!r} cannot prune" in err
    assert not list(out.glob("**/*.jsonl"))  # not even the unpruned reference ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_absent(capsys, tmp_path, model_dir):
    rc, err = _eval(capsys, "--device", "cuda", model=model_dir, out=tmp_path / "o")
    assert rc == 2 and "CUDA is not available" in err


def test_missing_required_and_bad_n(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--task", "shapes-vqa", "--out", "x"])
    assert exc.value.code == 2 and "--model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", "m", "--task", "shapes-vqa", "--out", "x", "--n", "0"])
    assert exc.value.code == 2


@pytest.mark.parametrize("args, message", [
    (["--keeps", "2"], "values must be in (0, 1]"),
    (["--keeps", "half"], "comma-separated numbers"),
    (["--methods", "atp:keep=0.3"], "names only"),
    (["--methods", "zzz"], "unknown method 'zzz'"),
])
def test_bad_sweep(capsys, tmp_path, broken_model, args, message):
    rc = main(["sweep", "--model", broken_model, "--task", "shapes-vqa", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err


@pytest.mark.slow  # a subprocess run interrupted and resumed: about 10-15 s on 2 busy cores
def test_ctrl_c_leaves_a_resumable_run(tmp_path, model_dir):
    """Interrupt a real run with SIGINT; the rerun resumes and equals an uninterrupted run."""
    common = ["eval", "--model", model_dir, "--task", "shapes-vqa", "--n", "40", "--method", "random:keep=0.5",
              "--timing", "0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "visprune", *common, "--out", str(tmp_path / "cut")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = tmp_path / "cut" / "samples" / "clean" / "none" / "part-0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if part.exists() and part.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert main([*common, "--out", str(tmp_path / "cut")]) == 0
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    keys = ("n", "accuracy", "kept_tokens", "flops_per_sample", "missing", "skipped")
    assert [{k: r[k] for k in keys} for r in cut["methods"]] == [{k: r[k] for k in keys} for r in whole["methods"]]
    lines = part.read_text().splitlines()
    assert len(lines) == 40 and len({json.loads(x)["id"] for x in lines}) == 40


def test_method_that_cannot_prune_the_model(capsys, tmp_path, model_dir):
    """Checked right after loading, before any sample: here a text encoder folder that does not exist."""
    rc, err = _eval(capsys, "--method", "text:keep=0.5,text_encoder=/nonexistent/clip", model=model_dir,
                    out=tmp_path / "o")
    assert rc == 2 and "method 'text:keep=0.5,text_encoder=/nonexistent/clip' cannot prune" in err
    assert not list((tmp_path / "o").glob("samples/clean/*/part-*.jsonl"))


def test_resume_with_other_settings_is_refused(capsys, tmp_path, model_dir):
    out = tmp_path / "o"
    rc, _ = _eval(capsys, "--timing", "0", "--max-new-tokens", "1", model=model_dir, out=out)
    assert rc == 0 and (out / "run.json").is_file()
    rc, err = _eval(capsys, "--timing", "0", "--max-new-tokens", "2", model=model_dir, out=out)
    assert rc == 2 and "holds a run with other settings (max_new_tokens)" in err
    rc, err = _eval(capsys, "--timing", "0", "--max-new-tokens", "1", "--seed", "3", model=model_dir, out=out)
    assert rc == 2 and "(seed)" in err
    rc, _ = _eval(capsys, "--timing", "0", "--max-new-tokens", "1", "--n", "3", model=model_dir, out=out)
    assert rc == 0  # more samples of the same run: resumes


def _gqa(tmp_path, ids=(1, 2), images=(1, 2)):
    from PIL import Image

    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    for i in images:
        Image.new("RGB", (60, 50), (40 * i, 90, 200)).save(folder / f"{i}.jpg")
    qs = {str(q): {"imageId": str(q), "question": "what colour is it ?", "answer": "blue"} for q in ids}
    (tmp_path / "q.json").write_text(json.dumps(qs))
    return ["--task", "gqa", "--questions", str(tmp_path / "q.json"), "--images", str(folder)]


def _gqa_eval(tmp_path, model, out, *args):
    return main(["eval", "--model", model, *_gqa(tmp_path), "--method", "random:keep=0.5", "--max-new-tokens",
                 "1", "--timing", "0", "--quiet", "--out", str(out), *args])


def test_a_failed_model_load_leaves_no_settings_behind(capsys, tmp_path, model_dir, broken_model):
    out = tmp_path / "o"
    rc, err = _eval(capsys, model=broken_model, out=out)
    assert rc == 2 and "cannot load it" in err
    assert not (out / "run.json").exists()
    rc, err = _eval(capsys, "--timing", "0", "--max-new-tokens", "1", model=model_dir, out=out)  # the corrected command
    assert rc == 0, err


@pytest.mark.parametrize("where, message", [("file", "is a file"), ("under", "is a file")])
def test_out_that_cannot_be_written_is_a_usage_error(capsys, tmp_path, model_dir, where, message):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "below"
    rc, err = _eval(capsys, model=model_dir, out=out)
    assert rc == 2 and (message in err or "not a folder" in err) and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-1"])
def test_stop_after_below_one_is_refused(capsys, tmp_path, model_dir, value):
    rc, err = _eval(capsys, "--stop-after", value, model=model_dir, out=tmp_path / "o")
    assert rc == 2 and "--stop-after must be at least 1" in err


def test_a_run_with_no_readable_sample_fails(capsys, tmp_path, model_dir):
    out = tmp_path / "o"
    rc = main(["eval", "--model", model_dir, *_gqa(tmp_path, ids=(7, 8), images=()), "--method", "random:keep=0.5",
               "--timing", "0", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "no sample could be evaluated" in err
    assert (out / "summary.json").is_file()  # with the skipped samples named


def test_an_edited_annotation_file_is_not_resumed(capsys, tmp_path, model_dir):
    out = tmp_path / "o"
    assert _gqa_eval(tmp_path, model_dir, out) == 0
    q = json.loads((tmp_path / "q.json").read_text())
    q["1"]["answer"] = "red"
    (tmp_path / "q.json").write_text(json.dumps(q))
    capsys.readouterr()
    args = ["eval", "--model", model_dir, "--task", "gqa", "--questions", str(tmp_path / "q.json"), "--images",
            str(tmp_path / "img"), "--method", "random:keep=0.5", "--max-new-tokens", "1", "--timing", "0",
            "--quiet", "--out", str(out)]
    assert main(args) == 2
    assert "questions_sha256" in capsys.readouterr().err


def test_two_runs_on_one_out_are_refused(capsys, tmp_path, model_dir):
    from visprune.evaluation.runner import exclusive

    out = tmp_path / "o"
    out.mkdir()
    with exclusive(out):  # as another process holding the folder would
        rc, err = _eval(capsys, "--timing", "0", model=model_dir, out=out)
    assert rc == 2 and "is in use by another run" in err
    rc, err = _eval(capsys, "--timing", "0", "--max-new-tokens", "1", model=model_dir, out=out)
    assert rc == 0, err
