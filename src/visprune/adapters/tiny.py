"""What an adapter module declares so that ``visprune.testing`` can build a tiny random-weight model of it.

Each adapter module's ``TINY`` maps its ``model_type`` values to a :class:`Tiny`: the special tokens its
template needs, its transformers config (from the tokenizer's ids and the builder's options), its model
class, the processor, and weights transformers leaves degenerate. ``visprune.testing`` walks the adapter
table and turns every entry into a builder (``T.llava()``, ``T.gemma3()``...). The pieces every family
shares live here, architecture-free: the word-level tokenizer, the tiny Llama and CLIP configs.
Everything heavy is imported inside the functions, so ``import visprune`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

WORDS = (
    "USER : ASSISTANT what colour is the red green blue star circle square left right of a an how many "
    "there ? . , yes no one two three shape big small top bottom cat dog"
).split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
IMAGE = 56
PATCH = 14


def word_tokenizer():
    """A word-level ``PreTrainedTokenizerFast`` over :data:`WORDS`, ``<image>`` special, padding left."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    fast.padding_side = "left"
    return fast


def llama_config(tok, hidden: int = 32, layers: int = 2):
    """A tiny Llama language model over ``tok``'s vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )


def clip_vision_config(image: int = IMAGE, hidden: int = 32, layers: int = 3):
    """A tiny CLIP tower: ``image`` px, 14 px patches."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        image_size=image, patch_size=PATCH, projection_dim=16,
    )


@dataclass(frozen=True)
class Tiny:
    """A tiny random-weight model of one ``model_type``, built by ``visprune.testing`` as: the tokenizer
    (:meth:`tokenizer`), ``config(tok, **options)``, ``torch.manual_seed(seed)``, the transformers class
    ``model`` on that config, ``init(model, seed)``, ``eval()``, ``processor(tok, config, **options)``.
    The builder's options are ``config``'s keyword parameters (their defaults included), and every
    option is also passed to ``processor``, which takes what it needs (``**_`` for the rest)."""

    model: str                             # the transformers class name, e.g. "LlavaForConditionalGeneration"
    config: Callable[..., Any]             # (tok, **options) -> transformers config; its docstring is the builder's
    processor: Callable[..., Any]          # (tok, config, **options) -> processor
    specials: tuple[str, ...] = ()         # the tokenizer's additional special tokens (replacing ("<image>",))
    named: dict[str, str] = field(default_factory=dict)  # named special tokens (``tok.boi_token``...) its processor reads
    plain: tuple[str, ...] = ()            # plain added tokens (kept by ``skip_special_tokens``)
    init: Callable[[Any, int], None] | None = None  # (model, seed): weights transformers leaves degenerate
    prompt: Callable[..., str] | None = None  # (question, n_images=1) -> prompt, where the template differs

    def tokenizer(self):
        tok = word_tokenizer()
        if self.specials:
            tok.add_special_tokens({"additional_special_tokens": list(self.specials)})
        if self.named:
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, pad_token="<pad>", unk_token="<unk>",
                                          bos_token="<s>", eos_token="</s>", extra_special_tokens=dict(self.named))
            tok.padding_side = "left"
        if self.plain:
            tok.add_tokens(list(self.plain))
        return tok
