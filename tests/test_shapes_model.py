"""The bundled proving-ground VLM: real loading path, real processor, answers far above chance."""

import numpy as np
import pytest
import torch

from visprune import shapes

needs_vlm = pytest.mark.skipif(
    not (shapes.CHECKPOINT / "config.json").is_file(),
    reason="no bundled shapes VLM checkpoint (train one with scripts/train_shapes.py)",
)
needs_clip = pytest.mark.skipif(
    not (shapes.clip_path() / "config.json").is_file(),
    reason="no bundled shapes CLIP (train one with scripts/train_shapes.py --stage1-only)",
)


def test_load_without_a_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_shapes.py"):
        shapes.load(tmp_path)


def test_processor_and_tokenizer_round_trip(tmp_path):
    """The tokenizer/processor the checkpoint ships, saved and reloaded like a checkpoint."""
    from transformers import AutoProcessor

    proc = shapes.build_processor(shapes.build_tokenizer())
    proc.save_pretrained(tmp_path)
    again = AutoProcessor.from_pretrained(tmp_path)
    s = shapes.make_samples(n=1, seed=99)[0]
    a = proc(text=shapes.prompt(proc, s.question), images=s.image, return_tensors="pt")
    b = again(text=shapes.prompt(again, s.question), images=s.image, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.allclose(a["pixel_values"], b["pixel_values"])
    assert (a["input_ids"] == again.tokenizer.convert_tokens_to_ids("<image>")).sum() == 256
    assert again.tokenizer.unk_token_id not in a["input_ids"][0].tolist()
    ids = again.tokenizer(s.answer, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1 and shapes.normalise_answer(again.tokenizer.decode(ids)) == s.answer


@pytest.fixture(scope="module")
def loaded():
    return shapes.load()


@needs_vlm
def test_load_goes_through_from_pretrained_on_the_package_folder(loaded):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

    model, processor = loaded
    assert isinstance(model, LlavaForConditionalGeneration)
    assert isinstance(processor, LlavaProcessor)
    assert isinstance(processor.tokenizer, PreTrainedTokenizerFast)
    assert str(model.config._name_or_path) == str(shapes.CHECKPOINT)
    assert model.config.vision_feature_layer == -2
    files = {p.name for p in shapes.CHECKPOINT.iterdir()}
    assert "model.safetensors" in files and "chat_template.jinja" in files | {
        "chat_template.json"
    } or processor.chat_template
    size = sum(p.stat().st_size for p in shapes.CHECKPOINT.rglob("*") if p.is_file())
    assert size < 30e6


@needs_vlm
def test_processor_expands_one_image_into_256_tokens(loaded):
    model, processor = loaded
    s = shapes.make_samples(n=1, seed=4242)[0]
    inputs = processor(text=shapes.prompt(processor, s.question), images=s.image, return_tensors="pt")
    n_img = (inputs["input_ids"] == model.config.image_token_index).sum().item()
    assert n_img == shapes.NUM_PATCHES
    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=inputs["pixel_values"])
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    feats = feats[0] if isinstance(feats, (list, tuple)) else feats
    assert feats.reshape(-1, feats.shape[-1]).shape[0] == shapes.NUM_PATCHES


@needs_vlm
def test_answers_held_out_questions_far_above_chance(loaded):
    model, processor = loaded
    samples = shapes.make_samples(n=40, seed=2024)
    preds = [shapes.answer(model, processor, s.image, s.question) for s in samples]
    assert all(len(p.split()) == 1 for p in preds)
    acc = np.mean([p == s.answer for p, s in zip(preds, samples)])
    chance = np.mean([shapes.CHANCE[s.qtype] for s in samples])
    assert acc >= chance + 0.3, (acc, chance)


@needs_clip
def test_clip_text_encoder_loads_and_embeds_questions():
    from transformers import AutoTokenizer, CLIPModel

    path = shapes.clip_path()
    clip = CLIPModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    text = tok(["what colour is the circle ?", "is there a red square ?"], padding=True,
               return_tensors="pt")
    assert (text["input_ids"] == tok.eos_token_id).any(1).all()  # CLIP pools at </s>
    with torch.no_grad():
        emb = clip.get_text_features(**text)
    emb = emb.pooler_output if hasattr(emb, "pooler_output") else emb
    assert emb.shape == (2, clip.config.projection_dim)
    assert not torch.allclose(emb[0], emb[1])
    if not (shapes.CHECKPOINT / "config.json").is_file():
        return
    # the LLaVA's tower is this CLIP's vision model
    model, _ = shapes.load()
    a = model.model.vision_tower.embeddings.patch_embedding.weight
    b = clip.vision_model.embeddings.patch_embedding.weight
    assert torch.equal(a, b)


def test_tower_only_model_carries_the_trained_clip_tower():
    """The grounding measurements (docs/defaults.md) use the stage-1 CLIP tower through from_pretrained."""
    model, processor = shapes.load_tower_only()
    clip, _ = shapes.load_clip()
    tower = model.model.vision_tower.state_dict()
    assert all(torch.equal(tower[k], v) for k, v in clip.vision_model.state_dict().items())
    inputs = processor(text=shapes.prompt(processor, "what colour is the star ?"), images=shapes.make_samples(1)[0].image,
                       return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == shapes.NUM_PATCHES
