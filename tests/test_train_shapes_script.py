"""scripts/train_shapes.py (its code: visprune.shapes.training) and scripts/probe_shapes_lm.py run end
to end at toy size."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from visprune import shapes
from visprune.shapes import training as T
from visprune.shapes.training import runtime

ROOT = Path(__file__).resolve().parents[1]
needs_checkpoint = pytest.mark.skipif(
    not (shapes.CHECKPOINT / "config.json").is_file(), reason="no bundled shapes checkpoint"
)
needs_clip = pytest.mark.skipif(
    not (shapes.clip_path() / "config.json").is_file(), reason="no bundled shapes CLIP"
)


def _run(args, tmp_path):
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def _logged(log: str, phase: str) -> list[str]:
    return [line for line in log.splitlines() if f"] {phase} step " in line]


@needs_clip
@pytest.mark.subprocess
def test_stage2_then_the_grounding_phase_run_save_and_reload(tmp_path):
    """Stage 2 with the grounding loss on every (full-image) batch, then the grounding phase with
    every batch compacted: the grounding loss is paid on full images only."""
    shutil.copytree(shapes.clip_path(), tmp_path / "clip")
    _run(["scripts/train_shapes.py", "--skip-stage1", "--out", str(tmp_path), "--stage2-steps", "3",
          "--pool", "64", "--batch2", "4", "--monitor-n", "8", "--final-n", "5", "--eval-every", "2",
          "--grounding-weight", "1", "--background", "1", "0", "--compact-p", "0", "--init", "0.1",
          "--finetune-steps", "2", "--finetune-compact-p", "1"], tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["heldout"]["n"] == 5 and 0.0 <= metrics["heldout"]["overall"] <= 1.0
    assert metrics["args"]["init"] == 0.1 and metrics["grounding_loss"]["weight"] == 1.0
    assert [h["step"] for h in metrics["stage2"]["history"]] == [0, 2]  # every 2nd step, the last included
    assert metrics["finetune"]["steps"] == 2 and [h["step"] for h in metrics["finetune"]["history"]] == [0, 1]
    # the answer head is taught in layer 2, not in layer 1 whose attention FastV (K=2) ranks tokens by
    assert metrics["grounding_loss"]["targets"] == [[0, 0, "attr"], [0, 1, "words"], [2, 0, "answer"]]
    log = (tmp_path / "train_log.txt").read_text()
    stage2, phase = _logged(log, "stage2"), _logged(log, "finetune")
    assert len(stage2) == 2 and all(" grounding 0.000 " not in line and "attr " in line for line in stage2)
    assert len(phase) == 2 and all(" grounding 0.000 () " in line for line in phase)
    assert "held-out acc" in log
    model, processor = shapes.load(tmp_path)  # the real loading path on what the script wrote
    assert model.config.text_config.initializer_range == 0.1
    s = shapes.make_samples(n=1, seed=5)[0]
    assert isinstance(shapes.answer(model, processor, s.image, s.question), str)


@needs_clip
@pytest.mark.subprocess
def test_probe_reports_an_escape_step_or_none(tmp_path):
    out = _run(["scripts/probe_shapes_lm.py", "--types", "colour", "--max-objects", "1", "--scenes", "32",
                "--seconds", "2", "--batch", "4"], tmp_path)
    assert "train answer accuracy" in out and "escape step:" in out


def test_patch_subset_keeps_every_object_patch_and_the_full_sequence_positions():
    import numpy as np
    import torch

    from visprune.shapes import model as M
    from visprune.shapes import scenes as S

    vocab = T.Vocab(M.build_tokenizer())
    rng = np.random.default_rng(0)
    scenes = [S.random_scene(S.scene_rng(3, i, "train")) for i in range(4)]
    patches = [T.object_patches(s) for s in scenes]
    keep = T.patch_subset(patches, 0.1, rng)
    assert keep.shape[0] == 4 and keep.shape[1] >= round(0.1 * S.NUM_PATCHES)
    for row, p in zip(keep.numpy(), patches):
        assert np.all(np.diff(row) > 0)  # ascending, no repeats
        assert set(np.flatnonzero(np.any(p, axis=0))) <= set(row)  # every object patch is there
    assert T.patch_subset(patches, 1.0, rng) is None

    turns = [("what colour is the circle ?", "red", None, None)]
    full, _, _ = T.build_sequence(vocab, turns)
    part, _, _ = T.build_sequence(vocab, turns, n_image=keep.shape[1])
    ids = torch.tensor([part] * 4)
    pos = T.subset_positions(ids, keep, img_start=1 + len(vocab.words("USER:")))
    img = np.flatnonzero(np.asarray(full) == vocab.image)
    for b in range(4):
        # image tokens sit where their patch sits in the full sequence; the text after is unmoved
        np.testing.assert_array_equal(pos[b, img[0] : img[0] + keep.shape[1]].numpy(), img[keep[b].numpy()])
        np.testing.assert_array_equal(pos[b, img[0] + keep.shape[1] :].numpy(), np.arange(img[-1] + 1, len(full)))
        assert [part[i] for i in range(len(part)) if part[i] != vocab.image] == [t for t in full if t != vocab.image]
    assert T.background_share(0, 100, 0.05, 0.5) == 0.05
    assert T.background_share(50, 100, 0.05, 0.5) == 1.0 and T.background_share(99, 100, 1.0, 0.0) == 1.0


@needs_clip
@pytest.mark.subprocess
def test_stage2_with_the_background_curriculum_and_stage1_with_object_weight(tmp_path):
    shutil.copytree(shapes.clip_path(), tmp_path / "clip")
    _run(["scripts/train_shapes.py", "--skip-stage1", "--out", str(tmp_path), "--stage2-steps", "4",
          "--pool", "64", "--batch2", "4", "--monitor-n", "8", "--final-n", "3", "--eval-every", "3",
          "--background", "0.1", "0.5", "--finetune-steps", "0"], tmp_path)
    log = (tmp_path / "train_log.txt").read_text()
    assert "background 0.10" in log and "background 1.00" in log  # the share rose to all patches
    _run(["scripts/train_shapes.py", "--stage1-only", "--out", str(tmp_path / "s1"), "--stage1-steps", "2",
          "--batch1", "4", "--save-every", "0"], tmp_path)
    s1 = json.loads((tmp_path / "s1" / "stage1.json").read_text())
    assert set(s1["object_patch_accuracy_heldout"]) == {"colour", "shape", "size", "part", "row", "col"}
    for bad, flag in ((["--stage2-steps", "0"], "--init-from"), (["--finetune-compact-p", "2"], "--finetune-compact-p"),
                      (["--answer-layer", "4"], "--answer-layer")):
        out = subprocess.run([sys.executable, "scripts/train_shapes.py", *bad, "--out", str(tmp_path / "x")],
                             cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 2 and flag in out.stderr
    _run(["scripts/train_shapes.py", "--skip-stage1", "--out", str(tmp_path), "--stage2-steps", "3",
          "--pool", "64", "--batch2", "4", "--monitor-n", "8", "--final-n", "3", "--eval-every", "3",
          "--compact-p", "1", "--balanced-counts", "--position-weight", "0", "--finetune-steps", "0"], tmp_path)
    args = json.loads((tmp_path / "metrics.json").read_text())["args"]
    assert args["compact_p"] == 1.0 and args["balanced_counts"] is True and args["position_weight"] == 0.0
    last_run = (tmp_path / "train_log.txt").read_text().split("args: ")[-1]  # the log is appended per run
    assert [line for line in last_run.splitlines() if "stage2 step" in line and " position 0.000 " in line]


@needs_checkpoint
@pytest.mark.subprocess
def test_init_from_starts_stage2_from_a_saved_checkpoint_and_the_log_shows_the_pace(tmp_path):
    """--init-from loads the projector and language model (at lr 0 they come out unchanged);
    every monitor line is followed by where the steps' time went."""
    from safetensors.torch import load_file

    shutil.copytree(shapes.clip_path(), tmp_path / "clip")
    _run(["scripts/train_shapes.py", "--skip-stage1", "--out", str(tmp_path), "--stage2-steps", "2",
          "--pool", "64", "--batch2", "4", "--monitor-n", "8", "--final-n", "3", "--eval-every", "1",
          "--stage2-lr", "0", "--finetune-steps", "0", "--init-from", str(shapes.CHECKPOINT)], tmp_path)
    ours, bundled = load_file(tmp_path / "model.safetensors"), load_file(shapes.CHECKPOINT / "model.safetensors")
    lm = [k for k in bundled if "vision_tower" not in k]
    assert lm and all(torch.equal(ours[k], bundled[k]) for k in lm)
    log = (tmp_path / "train_log.txt").read_text()
    assert "initialised from" in log
    assert log.count("s/step, process cpu") == 2 and "subnormal optimizer state" in log
    # jemalloc where installed (the script re-executes itself with it), else the system's malloc
    allocator = json.loads((tmp_path / "metrics.json").read_text())["allocator"]
    installed = any(Path(p).exists() for p in T.JEMALLOC)
    assert allocator == ("jemalloc (LD_PRELOAD)" if installed else "system malloc (no libjemalloc2)")
    assert f"allocator: {allocator}" in log


def test_grounding_targets_follow_the_answer_layer():
    """--answer-layer moves the answer head's target (default layer 2, past FastV's ranking layer)
    or drops it (-1); the hooks capture exactly the layers the targets name."""
    assert T.GROUNDING == T.grounding_targets(T.ANSWER_LAYER) and T.ANSWER_LAYER == 2
    assert T.grounding_targets(None) == ((0, 0, "attr"), (0, 1, "words"))
    assert T.grounded_layers(T.grounding_targets(2)) == (0, 2)
    assert T.grounded_layers(T.grounding_targets(0)) == (0,)


def test_the_jemalloc_reexec_starts_the_same_script_or_module(monkeypatch):
    """use_jemalloc re-executes the process with the command line it was started with: the short
    script (sys.argv as it came), or ``python -m MODULE`` when started with -m (sys.argv[0] is then
    the module's file, which cannot run as a plain script: its imports are relative)."""
    import types

    monkeypatch.setattr(sys, "argv", ["scripts/train_shapes.py", "--pool", "64"])
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=None))
    assert runtime.reexec_argv() == [sys.executable, "scripts/train_shapes.py", "--pool", "64"]
    cli = types.SimpleNamespace(name="visprune.shapes.training.cli")
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=cli))
    monkeypatch.setattr(sys, "argv", [str(ROOT / "src/visprune/shapes/training/cli.py"), "--pool", "64"])
    assert runtime.reexec_argv() == [sys.executable, "-m", "visprune.shapes.training.cli", "--pool", "64"]

def test_balanced_counts_take_their_share_with_answers_near_uniform():
    """--balanced-counts: training count questions follow the evaluation's answers (uniform 1..4),
    not what a fixed scene happens to allow most often ("1")."""
    import collections

    import numpy as np

    from visprune.shapes import scenes as S

    rng = np.random.default_rng(0)
    types, answers = collections.Counter(), collections.Counter()
    for i in range(300):
        scene = S.random_scene(S.scene_rng(3, i, "train"))
        for q, a, _, _ in T.make_turns(scene.objects, T.object_patches(scene), rng, 10, 0.0, balanced_counts=True):
            qtype = "count" if q.startswith("how many") else "other"
            types[qtype] += 1
            if qtype == "count":
                answers[a] += 1
                noun = q[len("how many "): -len(" are there ?")]
                n = sum(o.colour == noun.split()[0] if noun.endswith(" objects") else S.PLURALS[o.shape] == noun
                        for o in scene.objects)
                assert str(n) == a, (q, a)
    share = types["count"] / sum(types.values())
    assert 0.15 < share < 0.25  # one of five types
    freq = np.array([answers[str(c)] for c in range(1, 5)]) / sum(answers.values())
    assert freq.min() > 0.15 and freq.max() < 0.35, freq


def test_position_heads_read_each_image_token_at_its_own_patch_number():
    """PositionHeads pairs the image tokens, in order, with their patch numbers, also for a
    thinned and compacted subset: hidden states that spell out row and column give a loss near 0,
    the same states against shuffled patch numbers a high one."""
    from visprune.shapes import scenes as S

    heads = T.PositionHeads(hidden=2 * S.GRID, sites=(0,))
    with torch.no_grad():
        heads.heads[0].weight.copy_(torch.eye(2 * S.GRID) * 50)
        heads.heads[0].bias.zero_()
    keep = torch.stack([torch.sort(torch.randperm(S.NUM_PATCHES)[:40]).values for _ in range(3)])  # [3, 40]
    lead, tail = 4, 6
    mask = torch.zeros(3, lead + 40 + tail, dtype=torch.bool)
    mask[:, lead : lead + 40] = True
    h = torch.randn(3, lead + 40 + tail, 2 * S.GRID) * 0.1
    h[:, lead : lead + 40] = torch.cat([F.one_hot(keep // S.GRID, S.GRID), F.one_hot(keep % S.GRID, S.GRID)], -1).float()
    assert heads((h,), mask, keep).item() < 1e-3
    shuffled = keep[:, torch.randperm(40)]
    assert heads((h,), mask, shuffled).item() > 5.0


@needs_clip
@pytest.mark.subprocess
def test_stage2_trains_the_position_heads_and_saves_no_trace_of_them(tmp_path):
    shutil.copytree(shapes.clip_path(), tmp_path / "clip")
    _run(["scripts/train_shapes.py", "--skip-stage1", "--out", str(tmp_path), "--stage2-steps", "12",
          "--pool", "64", "--batch2", "4", "--monitor-n", "8", "--final-n", "3", "--eval-every", "11",
          "--background", "1", "0", "--compact-p", "0.5", "--position-weight", "1", "--finetune-steps", "0"], tmp_path)
    losses = [float(line.split(" position ")[1].split()[0]) for line in
              (tmp_path / "train_log.txt").read_text().splitlines() if " position " in line and "stage2 step" in line]
    assert len(losses) == 2 and losses[1] < 0.5 * losses[0]  # 2 x ln 16 = 5.5 at the start
    model, _ = shapes.load(tmp_path)
    bundled, _ = shapes.load()
    assert model.state_dict().keys() == bundled.state_dict().keys()


@needs_checkpoint
def test_probe_readout_reads_position_from_the_tower(tmp_path):
    readout = _script("probe_readout")
    r = readout.readout(shapes.CHECKPOINT, n=400, seed=777)  # 80 side questions, 24 held out
    assert r["side_questions"] >= 60
    assert list(r["patch"])[:2] == ["tower", "LM input"] and len(r["answer"]) == len(r["patch"]) - 1
    # stage 1's dense heads put the column in the features: 0.83 left/right here (1.00 with --n 3000)
    assert r["patch"]["tower"]["side"] > 0.7
    assert all(0.0 <= v <= 1.0 for site in r["patch"].values() for v in site.values())


@needs_checkpoint
@pytest.mark.subprocess
def test_probe_positions_runs_on_the_bundled_checkpoint(tmp_path):
    out = _run(["scripts/probe_positions.py", str(shapes.CHECKPOINT), "--n", "10"], tmp_path)
    lines = [line for line in out.splitlines() if line.startswith(str(shapes.CHECKPOINT))]
    assert [line.split()[1] for line in lines] == ["full", "compacted", "original"]
    assert all("all " in line and "count " in line for line in lines)


def _script(name):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


@needs_checkpoint
def test_shapes_errors_splits_side_questions_and_scores_caption_positions(tmp_path):
    errors = _script("shapes_errors")
    model, processor = shapes.load()
    groups = errors.side_by_partial_matches(model, processor, n=6, seed=4242)
    assert groups["all"][0] == 6 and sum(n for k, (n, _) in groups.items() if k != "all") == 6
    assert all(0.0 <= acc <= 1.0 for _, acc in groups.values())
    folder = tmp_path / "samples" / "clean" / "none"
    folder.mkdir(parents=True)
    sample = {"prediction": "big red circle at row 2 column 3 , small blue cross at row 9 column 0 .",
              "references": ["small blue cross at row 9 column 9 , big red circle at row 2 column 4 ."]}
    (folder / "0.jsonl").write_text(json.dumps(sample) + "\n")
    c = errors.caption_positions(tmp_path)
    assert c["matched"] == 2 and c["row_exact"] == 1.0 and c["col_exact"] == 0.0 and c["col_within_1"] == 0.5


@needs_checkpoint
def test_prumerge_probe_ablation_is_the_official_prumerge_at_its_defaults():
    import visprune
    from visprune import PruneConfig

    probe = _script("prumerge_probe")
    model, processor = shapes.load()

    def lm_input(config, sample):
        """The language model's input embeddings of one pruned prefill, and the kept indices."""
        seen = []
        hook = model.model.language_model.register_forward_pre_hook(
            lambda _m, args, kwargs: seen.append(kwargs["inputs_embeds"].clone()), with_kwargs=True)
        visprune.prune_(model, config, processor=processor)
        try:
            with torch.no_grad():
                model(**processor(text=shapes.prompt(processor, sample.question), images=sample.image,
                                  return_tensors="pt"))
            return seen[0], visprune.last_kept(model)[0]
        finally:
            hook.remove()
            visprune.unprune_(model)

    for sample in shapes.make_samples(n=3, seed=12345):
        official, kept = lm_input(PruneConfig(scorer="prumerge"), sample)
        ablation, same_kept = lm_input(probe.config({}), sample)
        assert torch.equal(official, ablation) and torch.equal(kept, same_kept)
        plain, plain_kept = lm_input(probe.config({"merging": "none", "extra": False, "order": "ascending"}), sample)
        assert torch.equal(plain_kept, kept) and plain.shape[1] == official.shape[1] - 1  # no extra token
        assert not torch.allclose(plain, official[:, : plain.shape[1]])  # unmerged tokens differ from merged ones
