"""``visprune bench --model DIR``: a saved model folder of any supported family benchmarked with its own
processor and chat prompt, with no family code outside the adapters."""

import json

import pytest
import torch
import transformers

import visprune
from visprune import testing as T
from visprune.apps.bench.folder import folder_geometry
from visprune.apps.cli import main
from visprune.methods import parse_method
from visprune.scoring.scorers.llm_pruning import language_model

# the families whose test processors load back from their folder here; InternVL's and Qwen3-VL's
# real processors need torchvision for their video processors, so theirs is handed to AutoProcessor
SAVED = ("gemma3", "idefics3", "llava_next", "blip2", "instructblip")
HANDED = ("internvl", "qwen3_vl")
METHODS = ("random:keep=0.25", "lmtext:keep=0.5")


def save(tmp_path, monkeypatch, family: str) -> str:
    """A tiny random ``family`` model saved with ``save_pretrained`` (and its processor, where it loads here)."""
    model, proc = getattr(T, family)()
    folder = tmp_path / family
    model.save_pretrained(folder)
    if family in SAVED:
        proc.save_pretrained(folder)
    else:
        if family == "qwen3_vl":  # what Qwen3VLProcessor's chat template writes for one image
            proc.image_token = "<|vision_start|><|image_pad|><|vision_end|>"
        monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", staticmethod(lambda *a, **k: proc))
    return str(folder)


def bench_model(folder: str, tmp_path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    rc = main(["bench", "--model", folder, "--repeats", "1", "--warmup", "0", "--new-tokens", "2", "--quiet",
               "--json", str(out), *extra])
    return rc, json.loads(out.read_text()) if out.exists() else {}


@torch.no_grad()
def sent_to_language_model(geo, config) -> tuple[list[int], int]:
    """(kept tokens per image by ``last_kept``, length of the sequence the language model received) of
    one pruned prefill of the geometry's inputs."""
    lengths = []
    lm = language_model(geo.model) or geo.model.language_model  # BLIP-2's is an attribute of the model itself
    hook = lm.register_forward_pre_hook(
        lambda _m, _a, kw: lengths.append(kw["inputs_embeds"].shape[1]), with_kwargs=True)
    try:
        if config is not None:
            visprune.prune_(geo.model, config, processor=geo.processor)
        geo.model(**geo.inputs)
        kept = [len(k) for k in visprune.last_kept(geo.model)] if config is not None else []
    finally:
        hook.remove()
        if config is not None:
            visprune.unprune_(geo.model)
    return kept, lengths[0]


@pytest.mark.parametrize("family", SAVED + HANDED)
def test_bench_model_reports_what_the_pruned_model_sent(tmp_path, monkeypatch, family):
    """Every family runs from its folder; the report's kept tokens are those the pruned model sent
    (``last_kept``, and the language model's sequence shortened by exactly the dropped ones), the
    unpruned row's visual tokens are the prompt's placeholders, and pruning lowers the counted FLOPs
    (scoring included) and the KV cache. BLIP-2's processor writes its query tokens itself, so its
    prompt names no image, and its counted prefill passes a parameter to a submodule."""
    folder = save(tmp_path, monkeypatch, family)
    rc, report = bench_model(folder, tmp_path, *[a for m in METHODS for a in ("--method", m)])
    assert rc == 0 and report["refused"] == []
    model_type = json.loads((tmp_path / family / "config.json").read_text())["model_type"]
    assert report["geometry"] == f"{model_type}-{family}"
    rows = {r["method"]: r for r in report["results"]}
    assert list(rows) == ["none", *METHODS]
    geo = folder_geometry(folder)  # the same folder, picture and prompt as the command's
    _, full = sent_to_language_model(geo, None)
    visual = report["visual_tokens"]
    assert visual > 0 and rows["none"]["kept_tokens"] is None
    for spec in METHODS:
        row = rows[spec]
        kept, length = sent_to_language_model(geo, parse_method(spec).config)
        assert row["kept_tokens"] == kept and length == full - visual + sum(kept)
        assert 0 < sum(kept) < visual
        assert 0 < row["kv_cache_ratio"] < 1 and 0 < row["flops_ratio"] < 1
        assert row["prefill_latency_ratio"] > 0 and row["generate_latency_ratio"] > 0


def test_refused_methods_are_reported_not_fatal(tmp_path, monkeypatch, capsys):
    """FastV on Gemma 3 (sliding-window layers) is refused by ``prune_``: the run goes on, the report
    lists it with ``prune_``'s own message, and the Markdown section is named after the folder."""
    folder = save(tmp_path, monkeypatch, "gemma3")
    fastv = "fastv:keep=0.5,llm_layer=1"
    md = tmp_path / "BENCHMARKS.md"
    rc, report = bench_model(folder, tmp_path, "--method", fastv, "--method", METHODS[0], "--markdown", str(md))
    assert rc == 0, capsys.readouterr().err
    geo = folder_geometry(folder)
    with pytest.raises(TypeError) as err:
        visprune.prune_(geo.model, parse_method(fastv).config, processor=geo.processor)
    assert report["refused"] == [{"method": fastv, "config": parse_method(fastv).to_dict()["config"],
                                  "refused": str(err.value)}]
    assert [r["method"] for r in report["results"]] == ["none", METHODS[0]]
    text = md.read_text()
    assert "<!-- bench:gemma3-gemma3-cpu -->" in text and f"- `{fastv}`: {err.value}" in text
    assert f"| none | all ({report['visual_tokens']}) |" in text


def test_bench_model_throughput(tmp_path, monkeypatch):
    """``--batch-sizes`` on a folder: each sample of a batch its own picture (ragged budgets), two
    images per prompt in the folder's own prompt, the batch-1 loop keeping the same counts."""
    folder = save(tmp_path, monkeypatch, "gemma3")
    rc, report = bench_model(folder, tmp_path, "--batch-sizes", "1,2", "--images", "2", "--loop", "bs1",
                             "--method", "e-adaprune:energy=0.9")
    assert rc == 0 and report["kind"] == "throughput"
    rows = [r for r in report["results"] if r["method"] != "none"]
    assert [r["batch_size"] for r in rows] == [1, 2]
    assert [len(r["kept_tokens"]) for r in rows] == [2, 4]  # one entry per image
    assert rows[1]["loop_bs1"]["same_kept_counts"]
    assert all(r["visual_tokens_per_sample"] == 2 * 16 for r in report["results"])  # 16 pooled tokens per image
    assert all(0 < r["flops_ratio"] < 1 for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--image-size", "64x64"], "--image-size sets the picture of a model folder: it needs --model"),
    (["--model", "MODEL", "--scoring", "eager", "--batch-sizes", "1"], "--scoring eager reads the LLaVA geometries'"),
    (["--model", "MODEL", "--device", "meta"], "--device meta counts the real-size geometries' FLOPs only"),
    (["--model", "MODEL", "--image-size", "64"], "--image-size takes WIDTHxHEIGHT"),
])
def test_bench_model_usage_errors(tmp_path, capsys, args, message):
    folder = tmp_path / "m"
    T.llava()[0].save_pretrained(folder)
    rc = main(["bench", *[str(folder) if a == "MODEL" else a for a in args]])
    assert rc == 2 and message in capsys.readouterr().err


def test_model_and_geometry_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--model", "x", "--geometry", "tiny"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_progress_only_on_a_terminal(monkeypatch, capsys):
    """Progress lines go to stderr when it is a terminal, never into a piped or logged report."""
    import io

    from visprune.apps.bench.command import progress_printer

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_printer(quiet=False) is None  # pytest's captured stderr is no terminal
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert progress_printer(quiet=True) is None
    progress_printer(quiet=False)("prefill round 1/3")
    assert terminal.getvalue() == "prefill round 1/3\n" and capsys.readouterr().out == ""
