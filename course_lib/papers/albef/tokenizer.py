"""ALBEF's text side before the model: a BERT-style tokenizer trained offline on the
training captions (``[PAD] [UNK] [CLS] [SEP] [MASK]`` first, then the words)."""
from __future__ import annotations

import re
from typing import Sequence

import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _hf_tokenizers():
    try:
        import tokenizers  # noqa: F401
        return tokenizers
    except ImportError:  # pragma: no cover - the fallback is tested explicitly with backend="words"
        return None


class CaptionTokenizer:
    """A BERT-style tokenizer trained offline on the training captions.

    Backends (ids 0-4 are always ``[PAD] [UNK] [CLS] [SEP] [MASK]``):

    * ``"wordlevel"`` (the default when the ``tokenizers`` library is installed): BERT's
      lower-case normaliser and pre-tokeniser from ``tokenizers`` and one token per word, the
      words sorted by frequency (ties alphabetically), so the same captions always give the
      same ids. The world's templated captions have a few dozen words: whole words suffice.
    * ``"wordpiece"``: a WordPiece model trained with ``tokenizers`` (the real captions of the
      paper profile, with rare words split into pieces). Its trainer breaks ties in hash order,
      so two trainings can differ slightly; cache keys hold the vocabulary's fingerprint.
    * ``"words"``: the same word-level vocabulary in plain Python, for machines without
      ``tokenizers``.

    :meth:`encode` adds [CLS] and [SEP] and pads to the longest caption of the batch (at most
    ``max_len`` tokens).
    """

    BACKENDS = ("auto", "wordlevel", "wordpiece", "words")

    def __init__(self, backend: str, max_len: int, hf=None, vocab: Sequence[str] | None = None):
        self.backend, self.max_len, self._hf = backend, int(max_len), hf
        if hf is not None:
            self.vocab = [hf.id_to_token(i) for i in range(hf.get_vocab_size())]
        else:
            self.vocab = list(vocab)
            self._index = {w: i for i, w in enumerate(self.vocab)}
        assert tuple(self.vocab[:len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(len(SPECIAL_TOKENS))
        self.special_ids = tuple(range(len(SPECIAL_TOKENS)))

    # -- training --------------------------------------------------------------------------------
    @staticmethod
    def _bert_pipeline(model):
        from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
        hf = Tokenizer(model)
        hf.normalizer = normalizers.BertNormalizer(lowercase=True)
        hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        hf.decoder = decoders.WordPiece()   # joins tokens (and ## pieces), no space before punctuation
        return hf

    @classmethod
    def train(cls, captions: Sequence[str], vocab_size: int = 1000, max_len: int = 24,
              backend: str = "auto") -> "CaptionTokenizer":
        if backend not in cls.BACKENDS:
            raise ValueError(f"backend={backend!r}; allowed: {', '.join(cls.BACKENDS)}")
        if backend == "auto":
            backend = "wordlevel" if _hf_tokenizers() is not None else "words"
        if backend == "wordpiece":
            from tokenizers import models, trainers
            hf = cls._bert_pipeline(models.WordPiece(unk_token="[UNK]"))
            trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                                show_progress=False)
            hf.train_from_iterator(list(captions), trainer)
            learned = sorted(set(hf.get_vocab()) - set(SPECIAL_TOKENS), key=lambda t: (t.startswith("##"), t))
            hf.model = models.WordPiece(vocab={t: i for i, t in enumerate(list(SPECIAL_TOKENS) + learned)},
                                        unk_token="[UNK]")
            return cls("wordpiece", max_len, hf=hf)
        if backend == "wordlevel":
            from tokenizers import models
            probe = cls._bert_pipeline(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
            split = lambda c: [w for w, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(c))]  # noqa: E731
        else:
            split = cls._words
        counts: dict[str, int] = {}
        for c in captions:
            for w in split(c):
                counts[w] = counts.get(w, 0) + 1
        words = sorted(counts, key=lambda w: (-counts[w], w))[: max(0, vocab_size - len(SPECIAL_TOKENS))]
        vocab = list(SPECIAL_TOKENS) + words
        if backend == "words":
            return cls("words", max_len, vocab=vocab)
        from tokenizers import models
        hf = cls._bert_pipeline(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
        return cls("wordlevel", max_len, hf=hf)

    @staticmethod
    def _words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())

    # -- use ---------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """The tokens of one caption, without [CLS] / [SEP] and untruncated."""
        if self._hf is not None:
            return self._hf.encode(text, add_special_tokens=False).tokens
        return [w if w in self._index else "[UNK]" for w in self._words(text)]

    def encode(self, texts: Sequence[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``: int64 (N, L) with [CLS] first and [SEP] last, [PAD] after; bool (N, L)
        True on real tokens. ``L`` = the longest caption of the batch, at most ``max_len``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for t in texts:
            if self._hf is not None:
                ids = self._hf.encode(t, add_special_tokens=False).ids
            else:
                ids = [self._index.get(w, self.unk_id) for w in self._words(t)]
            rows.append([self.cls_id] + ids[: self.max_len - 2] + [self.sep_id])
        L = max(len(r) for r in rows)
        out = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out, out != self.pad_id

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Ids -> text, special tokens dropped."""
        ids = [int(i) for i in ids if int(i) not in self.special_ids]
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=True)
        text = " ".join(self.vocab[i] for i in ids)
        return re.sub(r" ([^\sa-z0-9])", r"\1", text)

    def fingerprint(self) -> str:
        """A short hash of the vocabulary (part of the cache keys of trained models)."""
        import hashlib

        return hashlib.sha1("\n".join(self.vocab).encode()).hexdigest()[:12]

    def ordinary_ids(self) -> torch.Tensor:
        """Ids of the ordinary (non-special) tokens: where MLM's random replacements come from."""
        return torch.arange(len(SPECIAL_TOKENS), self.vocab_size)
