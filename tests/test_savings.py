"""The savings table (``scripts/savings_table.py`` -> ``docs/savings.md``): rows next to their adapters, counted on
tiny meta-device configurations here (the published sizes take a minute; the script's full run writes the doc)."""

import importlib.util
import inspect
import sys
from pathlib import Path

import pytest
import torch

from visprune.adapters import ADAPTERS
from visprune.measure.flops import count_flops_by_module
from visprune.measure.savings import KEEPS, TEXT_TOKENS, kept

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("savings_table", ROOT / "scripts" / "savings_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _script()


def test_the_script_collects_each_adapter_modules_rows_once(script):
    """Every adapter module with a ``savings`` function is reached through ``ADAPTERS``, once, whichever of its
    model types comes first; the doc has a section for every row the script now renders."""
    found = script.savings_functions()
    modules = {inspect.getmodule(cls) for cls in ADAPTERS.values()}
    assert sorted(found.values(), key=id) == sorted({m.savings for m in modules if hasattr(m, "savings")}, key=id)
    assert {"qwen3_vl", "qwen3_5", "idefics3"} <= set(found) and "qwen3_vl_moe" not in found and "smolvlm" not in found
    doc = (ROOT / "docs" / "savings.md").read_text()
    for heading in ("## Qwen3-VL-8B", "## Qwen3.5-27B", "## SmolVLM2-2.2B", "## LLaVA-1.5-7B", "## IDEFICS-9B"):
        assert heading in doc


def test_the_script_renders_every_row_on_tiny_configs(script, tmp_path):
    out = tmp_path / "savings.md"
    assert script.main(["--tiny", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## BLIP-2 OPT-2.7b, cut='vit'" in text and "## Qwen3.5-27B" in text and "## SmolVLM2-2.2B" in text
    assert text.count("| 0.25 |") == text.count("## ") - 1  # one table per section, the notes have none
    assert "Configuration:" not in text  # tiny sizes are nobody's published configuration
    out_one = tmp_path / "one.md"
    assert script.main(["--tiny", "--arch", "smolvlm", "--out", str(out_one)]) == 0  # idefics3's module, by either type
    assert out_one.read_text().count("## ") == 2  # its section and the notes


def test_qwen3_5_rows_count_the_linear_attention_layers():
    """The hybrid language model on meta: every Gated DeltaNet layer is counted, beyond its projections (the chunked
    delta rule's matmuls), and the count is the same as the one of the same model with real weights."""
    from transformers import Qwen3_5ForConditionalGeneration

    from visprune.adapters import qwen3_5

    [section] = qwen3_5.savings(tiny=True)
    rows = section.rows
    assert [r.lm_visual for r in rows] == [16, 8, 4] and rows[2].lm < rows[1].lm < rows[0].lm
    assert len({r.vision for r in rows}) == 1 and "solve_triangular" in section.note
    # the tiny config again, with weights: meta and real counts agree, layer by layer
    cfg = _tiny_qwen3_5_config()
    torch.manual_seed(0)
    real = Qwen3_5ForConditionalGeneration(cfg).eval()
    with torch.device("meta"):
        shell = Qwen3_5ForConditionalGeneration(cfg).eval()
    length = TEXT_TOKENS + kept(16, KEEPS[0])
    with torch.no_grad():
        on_meta, _ = count_flops_by_module(shell.model.language_model,
                                           inputs_embeds=torch.empty(1, length, 64, device="meta"))
        on_cpu, _ = count_flops_by_module(real.model.language_model, inputs_embeds=torch.randn(1, length, 64))
    assert on_meta == on_cpu
    linear = [i for i, kind in enumerate(cfg.text_config.layer_types) if kind == "linear_attention"]
    assert len(linear) == 3
    for i in linear:
        attn = real.model.language_model.layers[i].linear_attn
        projections = sum(2 * length * p.in_features * p.out_features
                          for p in (attn.in_proj_qkv, attn.in_proj_z, attn.in_proj_a, attn.in_proj_b, attn.out_proj))
        assert on_cpu[f"layers.{i}.linear_attn"] > projections  # conv and delta-rule matmuls on top


def _tiny_qwen3_5_config():
    from transformers import Qwen3_5Config

    rope = {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_interleaved": True,
            "mrope_section": [1, 1, 0]}
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, vocab_size=1000, linear_num_key_heads=2, linear_num_value_heads=4,
                linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4, full_attention_interval=4,
                rope_parameters=rope)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64)
    return Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=False)


def test_smolvlm_tower_is_counted_as_its_forward_counts():
    """SmolVLM2's tower is counted without the all-true patch mask its forward builds (meta tensors cannot be
    inspected): on real weights the unmasked path gives the tower's own output and the same FLOPs."""
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig

    from visprune.adapters import idefics3

    vis = SmolVLMVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=84, patch_size=14)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000)
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(SmolVLMConfig(vision_config=vis, text_config=text, scale_factor=3,
                                                          image_token_id=999)).eval()
    tower = model.model.vision_model
    pixels = torch.randn(3, 3, 84, 84)
    with torch.no_grad():
        stock, stock_out = count_flops_by_module(tower, pixels)
        unmasked, out = count_flops_by_module(idefics3._tower_unmasked, tower, pixels)
    assert unmasked["total"] == stock["total"] > 0
    torch.testing.assert_close(out, stock_out.last_hidden_state)
    [section] = idefics3.savings(tiny=True)
    tiles, per_tile = 17, (84 // 14 // 3) ** 2  # 4 x 4 tiles and the global one
    assert [r.at_cut for r in section.rows] == [kept(tiles * per_tile, k) for k in KEEPS]
    assert "40 tile-marker" in section.what
