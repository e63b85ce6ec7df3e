"""CLIP Interrogator captions (modes fast, classic, best, negative), a whole batch at a time.

The ``clip-interrogator`` package does the label work: its ``Config`` and ``Interrogator`` build
the label tables (``LabelTable``: the art-site flavours, mediums, artists, movements, trending
terms, negatives) and cache their text embeddings under the workbench's data folder; its
prompt helpers truncate to CLIP's 77 tokens. Its own loop, though, takes one image at a time and
re-stacks every label embedding for every ranking. Here the image features of a batch are
computed once (one ``encode_image`` call) and shared by every requested mode, the caption model
runs once per batch, rankings are one matrix product against embeddings stacked once, and the
flavour chain of best/negative encodes the candidates of every image in the batch together.
The chain follows the package's ``Interrogator.chain`` step for step.

Models come from :func:`load_clip` (open_clip: ``ARCH/TAG``, ``hf-hub:org/repo`` or a local folder
with ``open_clip_config.json``) and :func:`workbench.captions.blip.load_caption_model`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from PIL import Image as PILImage

from workbench.captions.base import Captioner, CaptionerError, CaptionResult, is_local, load_model, resolve_device
from workbench.captions.vocabulary import FashionVocabulary, rank_labels

Mode = Literal["fast", "classic", "best", "negative"]
MODES: tuple[Mode, ...] = ("fast", "classic", "best", "negative")
# Flavours per mode when ``max_flavors`` is not set (the package's defaults).
DEFAULT_MAX_FLAVORS = {"fast": 32, "classic": 3, "best": 32, "negative": 32}


class InterrogatorSettings(BaseModel):
    """The CLIP Interrogator's models and knobs (``caption_model=None``: blip-large, or blip-base
    with ``low_vram``)."""

    clip_model: str = Field("ViT-L-14/openai", description="open_clip ARCH/TAG, hf-hub:org/repo, a local folder, "
                            "or a model registry name.")
    caption_model: str | None = Field(None, description="blip-base, blip-large, blip2, git, a hub id or a folder.")
    modes: list[Mode] = Field(default_factory=lambda: ["fast"])
    vocabulary: Literal["art", "fashion", "both"] = Field(
        "art", description="art: the package's flavours; fashion: the dataset's garments and attributes; both.")
    low_vram: bool = Field(False, description="Offload models between steps, smaller chunks (the package's low-VRAM defaults).")
    device: str = "auto"
    data_path: str | None = Field(None, description="Folder of label lists (artists/flavors/mediums/movements/negative.txt); default: the package's.")
    max_flavors: int | None = Field(None, ge=1, description="Flavours per prompt; default per mode (fast 32, classic 3, best 32, negative 32).")
    min_flavors: int = Field(8, ge=0, description="best: flavours always added before the chain may stop.")
    flavor_intermediate_count: int | None = Field(None, ge=1, description="Candidates the chain considers (2048; 1024 low-VRAM).")
    chunk_size: int | None = Field(None, ge=1, description="Texts per CLIP text batch (2048; 1024 low-VRAM).")
    caption_max_length: int = Field(32, ge=1)
    download_label_cache: bool = Field(False, description="Fetch the package's precomputed label embeddings (needs internet).")

    def resolved(self) -> InterrogatorSettings:
        """The settings with the low-VRAM defaults filled in."""
        low = self.low_vram
        return self.model_copy(update={
            "caption_model": self.caption_model or ("blip-base" if low else "blip-large"),
            "flavor_intermediate_count": self.flavor_intermediate_count or (1024 if low else 2048),
            "chunk_size": self.chunk_size or (1024 if low else 2048),
        })


class ClipModel:
    """A loaded open_clip model with its preprocessing, tokenizer and the name the package uses."""

    def __init__(self, model: Any, preprocess: Any, tokenize: Any, package_name: str, device: str):
        self.model, self.preprocess, self.tokenize = model, preprocess, tokenize
        self.package_name, self.device = package_name, device


def register_clip_config(name: str, model_cfg: dict[str, Any]) -> None:
    """Make an open_clip architecture known under ``name`` from a config dict
    (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    from open_clip import factory

    # open_clip only registers configs from files; its registry is this dict.
    factory._MODEL_CONFIGS[name] = dict(model_cfg)


def _clip_source(name: str) -> tuple[str, str | None, str, dict[str, Any]]:
    """``(open_clip model name, pretrained tag, package name ALIAS/TAG, model config)``."""
    from open_clip import factory

    local = name[len("local-dir:"):] if name.startswith("local-dir:") else (name if is_local(name) else None)
    if local is not None:
        path = Path(local).expanduser().resolve()
        config_file = path / "open_clip_config.json"
        if not config_file.is_file():
            raise CaptionerError(f"{path}: no open_clip_config.json; a local CLIP folder needs it and its weights "
                                 "(open_clip_model.safetensors or open_clip_pytorch_model.bin)")
        cfg = json.loads(config_file.read_text())["model_cfg"]
        alias = f"local-{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
        return f"local-dir:{path}", None, f"{alias}/local", cfg
    if name.startswith("hf-hub:"):
        repo = name[len("hf-hub:"):]
        cfg = factory._get_hf_config(repo)["model_cfg"]
        return name, None, f"hf-{repo.replace('/', '-')}/hub", cfg
    arch, _, tag = name.partition("/")
    cfg = factory.get_model_config(arch)
    if cfg is None:
        raise CaptionerError(f"unknown CLIP model {name!r}: use ARCH/TAG (e.g. ViT-L-14/openai, ARCH/none for "
                             "random weights), ARCH//path/to/open_clip_model.safetensors (a local pretrained "
                             "file), hf-hub:org/repo, or a folder with open_clip_config.json")
    if tag and Path(tag).expanduser().is_file():  # ARCH/<path>: open_clip's pretrained= a local file
        return arch, str(Path(tag).expanduser()), f"{arch}/file", cfg
    return arch, (None if tag in ("", "none") else tag), f"{arch}/{tag or 'none'}", cfg


def load_clip(name: str, device: str = "auto") -> ClipModel:
    """An open_clip model from ``ARCH/TAG``, ``hf-hub:org/repo``, a local folder or a model registry
    name (a local copy of the spec is used when the registry finds one); cached per process."""
    from workbench.models import resolve

    device = resolve_device(device)
    source = resolve(name, "clip")

    def loader() -> ClipModel:
        import open_clip

        create_name, pretrained, package_name, cfg = _clip_source(source)  # hf-hub: asks the hub: inside the load
        alias = package_name.split("/")[0]
        register_clip_config(alias, cfg)  # so that the package finds its tokenizer by name
        model, _, preprocess = open_clip.create_model_and_transforms(
            create_name, pretrained=pretrained, device=device,
            precision="fp16" if device.startswith("cuda") else "fp32")
        model.eval()
        return ClipModel(model, preprocess, open_clip.get_tokenizer(alias), package_name, device)

    return load_model("clip", source, loader, device)


class _CandidateTokens:
    """Token rows of chain candidates ``"<prompt>, <phrase>"`` put together from cached pieces.

    Every chain step tokenizes the current prompt joined with each remaining phrase; with
    open_clip's BPE tokenizer the tokens of such a join are the prompt's tokens followed by
    those of ``", <phrase>"`` whenever the prompt ends in a letter or digit, so each piece is
    tokenized once. Each composition is checked against the tokenizer on its first candidate;
    anything else is tokenized the ordinary way (``candidates`` returns ``None``).
    """

    def __init__(self, tokenize: Any):
        from open_clip.tokenizer import SimpleTokenizer

        self.tokenize = tokenize
        self.usable = isinstance(tokenize, SimpleTokenizer) and tokenize.reduction_fn is None
        self._pieces: dict[str, list[int]] = {}
        self.head_length = 0

    def _encode(self, text: str) -> list[int]:
        ids = self._pieces.get(text)
        if ids is None:
            ids = self._pieces[text] = self.tokenize.encode(text)
        return ids

    def candidates(self, prompt: str, phrases: list[str]):
        """``(len(phrases), context)`` token rows, or ``None`` when composing would not be exact;
        ``head_length`` is then the length of their shared head (start token + prompt tokens)."""
        import torch

        if not self.usable or not phrases or not prompt or not prompt[-1].isalnum():
            return None
        tok = self.tokenize
        context = tok.context_length
        head = [tok.sot_token_id, *tok.encode(prompt)]
        room = context - len(head)
        if room < 1:
            return None
        # Only the tails differ: they are put in one short tensor (a tensor per row, or one of
        # whole rows, costs more than the rest of the work).
        tails = []
        for phrase in phrases:
            ids = self._encode(", " + phrase) + [tok.eot_token_id]
            if len(ids) > room:
                ids = ids[:room]
                ids[-1] = tok.eot_token_id
            tails.append(ids)
        width = max(len(ids) for ids in tails)
        out = torch.zeros((len(phrases), context), dtype=torch.long)
        out[:, :len(head)] = torch.tensor(head)
        out[:, len(head):len(head) + width] = torch.tensor([ids + [0] * (width - len(ids)) for ids in tails])
        if not torch.equal(out[0], tok([f"{prompt}, {phrases[0]}"])[0]):
            return None
        self.head_length = len(head)
        return out


def _token_lengths(tokens):
    """Tokens up to and including the end token, per row (padding is 0)."""
    return (tokens != 0).sum(dim=-1)


def encode_text_trimmed(model: Any, tokens, length: int):
    """``model.encode_text(tokens)``, computed on the first ``length`` positions only.

    CLIP's text tower is causal and pools at the end token, so the padding after the longest
    text of a batch cannot change any result; skipping it saves most of the work for the short
    prompts the Interrogator ranks. Models of another shape go through ``encode_text`` unchanged.
    """
    from open_clip.model import CLIP
    from open_clip.transformer import text_global_pool

    pool = getattr(model, "text_pool_type", None)
    if not isinstance(model, CLIP) or model.attn_mask is None or pool not in ("argmax", "eos") \
            or length >= tokens.shape[1]:
        return model.encode_text(tokens)
    tokens = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), tokens, pool, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch_linear()) else x @ model.text_projection
    return x


def _prefix_reusable(model: Any) -> bool:
    """Whether :func:`encode_with_prefix` reproduces ``model.encode_text``: open_clip's CLIP with
    plain causal ``ResidualAttentionBlock`` layers (self-attention through ``nn.MultiheadAttention``)."""
    import torch
    from open_clip.model import CLIP
    from open_clip.transformer import ResidualAttentionBlock

    if not isinstance(model, CLIP) or model.attn_mask is None or getattr(model, "text_pool_type", None) not in ("argmax", "eos"):
        return False
    for block in model.transformer.resblocks:
        attn = getattr(block, "attn", None)
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv") \
                or not isinstance(attn, torch.nn.MultiheadAttention) or not attn._qkv_same_embed_dim \
                or attn.bias_k is not None or attn.add_zero_attn or (attn.training and attn.dropout):
            return False
    return True


def encode_with_prefix(model: Any, prefix, rows, pool_at):
    """CLIP text features of token ``rows`` that all start with the tokens ``prefix``.

    The text tower is causal: the prefix's keys and values in every layer are the same for every
    row, so they are computed once and each row runs only its own tokens after the prefix
    (``rows[:, len(prefix):]``, padded with 0 after the end token). ``pool_at``: the pooled (end
    token) position of each row. Only for models :func:`_prefix_reusable` accepts.
    """
    import torch
    import torch.nn.functional as F

    p, n = prefix.shape[0], rows.shape[0]
    tail = rows[:, p:int(pool_at.max()) + 1]
    s = tail.shape[1]
    cast = model.transformer.get_cast_dtype()
    pos = model.positional_embedding.to(cast)
    x_pre = (model.token_embedding(prefix[None]).to(cast) + pos[:p])
    x = model.token_embedding(tail).to(cast) + pos[p:p + s]
    # Row tokens see the whole prefix and the row's tokens up to themselves.
    seen = torch.ones((s, p + s), dtype=torch.bool, device=x.device)
    seen[:, p:] = torch.ones((s, s), dtype=torch.bool, device=x.device).tril()
    pre_mask = torch.ones((p, p), dtype=torch.bool, device=x.device).tril()
    width = x.shape[-1]
    for block in model.transformer.resblocks:
        attn = block.attn
        q0, k0, v0 = _heads(attn, block.ln_1(x_pre))
        a0 = F.scaled_dot_product_attention(q0, k0, v0, attn_mask=pre_mask)
        q, k, v = _heads(attn, block.ln_1(x))
        k = torch.cat([k0.expand(n, -1, -1, -1), k], dim=2)
        v = torch.cat([v0.expand(n, -1, -1, -1), v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=seen)
        a0 = attn.out_proj(a0.transpose(1, 2).reshape(1, p, width))
        a = attn.out_proj(a.transpose(1, 2).reshape(n, s, width))
        x_pre = x_pre + block.ls_1(a0)
        x_pre = x_pre + block.ls_2(block.mlp(block.ln_2(x_pre)))
        x = x + block.ls_1(a)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    x = model.ln_final(x[torch.arange(n, device=x.device), pool_at - p])
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch_linear()) else x @ model.text_projection
    return x


def _heads(attn: Any, h):
    """Queries, keys and values of ``nn.MultiheadAttention`` ``attn`` for ``h`` ``(N, L, width)``,
    each ``(N, heads, L, head width)``."""
    import torch.nn.functional as F

    n, length, width = h.shape
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    return [t.reshape(n, length, attn.num_heads, width // attn.num_heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1)]


def torch_linear():
    """``torch.nn.Linear`` (imported late: this module is imported by the CLI)."""
    import torch

    return torch.nn.Linear


class ClipInterrogatorCaptioner(Captioner):
    """The CLIP Interrogator in one or several modes; sources ``clip-fast``, ``clip-classic`` ..."""

    def __init__(self, settings: InterrogatorSettings | None = None, batch_size: int = 8,
                 cache_dir: str | Path = "cache", fashion: FashionVocabulary | None = None):
        self.settings = (settings or InterrogatorSettings()).resolved()
        if not self.settings.modes:
            raise CaptionerError("no interrogator mode chosen: pick from fast, classic, best, negative")
        if self.settings.vocabulary != "art" and fashion is None:
            raise CaptionerError(f"vocabulary {self.settings.vocabulary!r} needs the fashion vocabulary of a dataset")
        self.fashion = fashion if self.settings.vocabulary != "art" else None
        self.sources = [f"clip-{mode}" for mode in self.settings.modes]
        self.model = self.settings.clip_model
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir)
        self._ready = False

    # -- identity -------------------------------------------------------------------------------
    def settings_for(self, source: str) -> dict[str, Any]:
        """What shapes this mode's text: models, vocabulary, flavour counts."""
        mode = source.removeprefix("clip-")
        values = self.settings.model_dump(exclude={"device", "modes", "download_label_cache", "chunk_size"})
        values["mode"] = mode
        values["max_flavors"] = self.max_flavors(mode)
        if self.fashion is not None:
            values["fashion_vocabulary"] = hashlib.sha256("\n".join(self.fashion.all_labels).encode()).hexdigest()[:16]
        return values

    def max_flavors(self, mode: str) -> int:
        """Flavours per prompt in ``mode``."""
        return self.settings.max_flavors or DEFAULT_MAX_FLAVORS[mode]

    # -- setup ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load CLIP, the caption model and the label tables (embeddings cached on disk)."""
        if self._ready:
            return
        import numpy as np
        import torch
        from clip_interrogator import Config, Interrogator, LabelTable

        s = self.settings
        self.clip = load_clip(s.clip_model, s.device)
        self.device = self.clip.device
        needs_caption = any(mode != "negative" for mode in s.modes)
        self.captioner = None
        if needs_caption:
            from workbench.captions.blip import load_caption_model

            self.captioner = load_caption_model(s.caption_model, s.device)
        config = Config(
            clip_model_name=self.clip.package_name, caption_model_name=None,
            cache_path=str(self.cache_dir), download_cache=s.download_label_cache, chunk_size=s.chunk_size,
            flavor_intermediate_count=s.flavor_intermediate_count, device=self.device, quiet=True,
            **({"data_path": s.data_path} if s.data_path else {}))
        # Config's model fields are class attributes: set them on the instance so that the
        # Interrogator uses the models loaded here instead of downloading its own.
        config.clip_model, config.clip_preprocess = self.clip.model, self.clip.preprocess
        self.ci = Interrogator(config)
        self.ci.tokenize = self.clip.tokenize

        def stacked(table: LabelTable) -> torch.Tensor:
            embeds = np.stack(table.embeds) if len(table.embeds) else np.zeros((0, 1), np.float32)
            return torch.from_numpy(np.asarray(embeds, dtype=np.float32)).to(self.device)

        self.tables: dict[str, tuple[list[str], torch.Tensor]] = {}
        if s.vocabulary in ("art", "both"):
            for name in ("artists", "flavors", "mediums", "movements", "trendings"):
                table = getattr(self.ci, name)
                self.tables[name] = (list(table.labels), stacked(table))
        if self.fashion is not None:
            for name, labels in self.fashion.tables().items():
                digest = hashlib.sha256("\n".join(labels).encode()).hexdigest()[:8]
                table = LabelTable(list(labels), f"fashion-{name}-{digest}", self.ci)
                self.tables[f"fashion-{name}"] = (list(table.labels), stacked(table))
        merged_labels: list[str] = []
        merged_embeds = []
        for labels, embeds in self.tables.values():
            merged_labels.extend(labels)
            merged_embeds.append(embeds)
        self.merged = (merged_labels, torch.cat(merged_embeds) if merged_embeds else None)
        self.negative_labels = list(self.ci.negative.labels)
        self._composer = _CandidateTokens(self.clip.tokenize)
        self._prefix_reuse = _prefix_reusable(self.clip.model)
        self._ready = True

    # -- batched pieces ----------------------------------------------------------------------------
    def _autocast(self):
        import contextlib

        import torch

        if str(self.device).startswith("cuda"):
            return torch.autocast("cuda")
        return contextlib.nullcontext()

    def image_features(self, images: list[PILImage.Image]):
        """Normalised CLIP image features of the batch, ``(len(images), dim)``, in one pass."""
        import torch

        self.load()
        self._offload(clip_on_device=True)
        pixels = torch.stack([self.clip.preprocess(image) for image in images]).to(self.device)
        with torch.no_grad(), self._autocast():
            features = self.clip.model.encode_image(pixels).float()
        return features / features.norm(dim=-1, keepdim=True)

    def text_features(self, texts: list[str], tokens=None):
        """Normalised CLIP text features (of ``texts``, or of their ``tokens`` when given),
        ``chunk_size`` texts at a time, shortest first."""
        import torch

        if tokens is None:
            if not texts:
                return torch.zeros((0, 1), device=self.device)
            tokens = self.clip.tokenize(texts)
        if len(tokens) == 0:
            return torch.zeros((0, 1), device=self.device)
        # Encoding texts of similar length together lets each chunk stop at its longest text.
        lengths = _token_lengths(tokens)
        order = torch.argsort(lengths)
        parts = []
        for start in range(0, len(texts), self.settings.chunk_size):
            index = order[start:start + self.settings.chunk_size]
            chunk = tokens[index].to(self.device)
            with torch.no_grad(), self._autocast():
                features = encode_text_trimmed(self.clip.model, chunk, int(lengths[index].max())).float()
            parts.append(features / features.norm(dim=-1, keepdim=True))
        out = torch.empty((len(tokens), parts[0].shape[1]), device=self.device)
        out[order.to(self.device)] = torch.cat(parts)
        return out

    def captions(self, images: list[PILImage.Image]) -> list[str]:
        """The caption model's captions of the batch, one ``generate`` call."""
        self.load()
        if self.captioner is None:
            raise CaptionerError("no caption model loaded (only negative mode was asked for)")
        self._offload(clip_on_device=False)
        try:
            return self.captioner.generate(images, max_new_tokens=self.settings.caption_max_length)
        finally:
            self._offload(clip_on_device=True)

    def _offload(self, clip_on_device: bool) -> None:
        """Low-VRAM: keep only the model in use on the accelerator."""
        if not self.settings.low_vram or not str(self.device).startswith("cuda"):
            return
        if clip_on_device:
            if self.captioner is not None:
                self.captioner.to("cpu")
            self.clip.model.to(self.device)
        else:
            self.clip.model.to("cpu")
            if self.captioner is not None:
                self.captioner.to(self.device)

    def _rank(self, features, table: str, top: int, reverse: bool = False) -> list[list[str]]:
        labels, embeds = self.tables[table] if table != "merged" else self.merged
        return rank_labels(features, embeds, labels, top, reverse)

    def _truncate(self, text: str) -> str:
        from clip_interrogator.clip_interrogator import _truncate_to_fit

        return _truncate_to_fit(text, self.clip.tokenize)

    # -- modes ---------------------------------------------------------------------------------------
    def fast(self, features, captions: list[str], max_flavors: int) -> list[str]:
        """Caption plus the top-ranked terms of every table (truncated to 77 tokens)."""
        tops = self._rank(features, "merged", max_flavors)
        return [self._truncate(caption + ", " + ", ".join(top)) for caption, top in zip(captions, tops)]

    def classic(self, features, captions: list[str], max_flavors: int) -> list[str]:
        """Caption, medium, artist, trending, movement and flavours (fashion: garment,
        attributes, extra term)."""
        n = len(captions)
        prompts = list(captions)
        if self.settings.vocabulary in ("art", "both"):
            medium = [r[0] for r in self._rank(features, "mediums", 1)]
            artist = [r[0] for r in self._rank(features, "artists", 1)]
            trending = [r[0] for r in self._rank(features, "trendings", 1)]
            movement = [r[0] for r in self._rank(features, "movements", 1)]
            flaves = [", ".join(r) for r in self._rank(features, "flavors", max_flavors)]
            for i in range(n):
                if prompts[i].startswith(medium[i]):
                    prompts[i] = f"{prompts[i]} {artist[i]}, {trending[i]}, {movement[i]}, {flaves[i]}"
                else:
                    prompts[i] = f"{prompts[i]}, {medium[i]} {artist[i]}, {trending[i]}, {movement[i]}, {flaves[i]}"
        if self.fashion is not None:
            parts: list[list[str]] = [[] for _ in range(n)]
            for table, top in (("fashion-garments", 1), ("fashion-attributes", max_flavors), ("fashion-extras", 1)):
                if table in self.tables:
                    for i, labels in enumerate(self._rank(features, table, top)):
                        parts[i].extend(labels)
            prompts = [", ".join([p, *extra]) for p, extra in zip(prompts, parts)]
        return [self._truncate(p) for p in prompts]

    def chain(self, features, phrases: list[list[str]], best_prompts: list[str] | None = None,
              min_count: int = 8, max_count: int = 32, reverse: bool = False) -> list[str]:
        """The package's flavour chain for every image of the batch at once: keep adding the
        phrase that most raises (``reverse``: lowers) the prompt's similarity to the image."""
        from clip_interrogator.clip_interrogator import _prompt_at_max_len

        n = len(phrases)
        pools = [dict.fromkeys(p) for p in phrases]  # ordered sets
        best, best_sim = [""] * n, [0.0] * n
        if best_prompts is None:
            unique = list(dict.fromkeys(x for pool in pools for x in pool))
            index = {text: i for i, text in enumerate(unique)}
            sims = (self.text_features(unique) @ features.T).cpu() if unique else None
            for i, pool in enumerate(pools):
                column = [float(sims[index[x], i]) for x in pool]
                pick = max(range(len(column)), key=lambda j: -column[j] if reverse else column[j])
                best[i] = list(pool)[pick]
                # The package keeps this first similarity un-negated even in reverse; so do we.
                best_sim[i] = column[pick]
                del pool[best[i]]
        else:
            best = list(best_prompts)
            own = self.text_features(best)
            best_sim = (own * features).sum(-1).cpu().tolist()
        curr, curr_sim = list(best), list(best_sim)
        active = [i for i in range(n) if pools[i]]
        for step in range(max_count):
            if not active:
                break
            scored = self._score_candidates(features, curr, pools, active)
            still = []
            for i in active:
                flavours, row = scored[i]
                pick = max(range(len(row)), key=lambda j: -row[j] if reverse else row[j])
                flavour, sim = flavours[pick], row[pick]
                prompt = f"{curr[i]}, {flavour}"
                if reverse:
                    sim = -sim
                if sim > best_sim[i]:
                    best[i], best_sim[i] = prompt, sim
                if not (sim > curr_sim[i] or step < min_count):
                    continue
                curr[i], curr_sim[i] = prompt, sim
                if _prompt_at_max_len(curr[i], self.clip.tokenize):
                    continue
                del pools[i][flavour]
                if pools[i]:
                    still.append(i)
            active = still
        return best

    def _score_candidates(self, features, curr: list[str], pools: list[dict[str, None]],
                          active: list[int]) -> dict[int, tuple[list[str], list[float]]]:
        """For each active image: its remaining flavours and the similarity of each candidate
        ``"<prompt>, <flavour>"`` to the image.

        Images whose prompts are equal share their candidates, so every distinct candidate text
        is encoded once; the candidates of one prompt are encoded after that prompt's own
        encoding, reused for all of them (see :func:`encode_with_prefix`) when the model allows.
        """
        import torch

        groups: dict[str, dict[str, None]] = {}
        for i in active:
            groups.setdefault(curr[i], {}).update(pools[i])
        reuse = self._prefix_reuse
        encoded: dict[str, tuple[dict[str, int], Any]] = {}
        plain_texts: list[str] = []
        plain_tokens, plain_owner = [], []
        for prompt, union in groups.items():
            flavours = list(union)
            composed = self._composer.candidates(prompt, flavours)
            if composed is not None and reuse and self._composer.head_length < composed.shape[1]:
                rows, p = composed.to(self.device), self._composer.head_length
                pool_at = (rows.argmax(dim=-1) if self.clip.model.text_pool_type == "argmax"
                           else (rows == self.clip.model.text_eos_id).int().argmax(dim=-1))
                parts = []
                for start in range(0, len(rows), self.settings.chunk_size):
                    with torch.no_grad(), self._autocast():
                        part = encode_with_prefix(self.clip.model, rows[0, :p], rows[start:start + self.settings.chunk_size],
                                                  pool_at[start:start + self.settings.chunk_size]).float()
                    parts.append(part / part.norm(dim=-1, keepdim=True))
                encoded[prompt] = ({f: j for j, f in enumerate(flavours)}, torch.cat(parts))
                continue
            texts = [f"{prompt}, {f}" for f in flavours]
            plain_tokens.append(composed if composed is not None else self.clip.tokenize(texts))
            plain_owner.append((prompt, flavours, len(plain_texts)))
            plain_texts.extend(texts)
        if plain_texts:
            features_all = self.text_features(plain_texts, torch.cat(plain_tokens))
            for prompt, flavours, offset in plain_owner:
                encoded[prompt] = ({f: j for j, f in enumerate(flavours)},
                                   features_all[offset:offset + len(flavours)])
        out: dict[int, tuple[list[str], list[float]]] = {}
        for i in active:
            index, text_features = encoded[curr[i]]
            flavours = list(pools[i])
            rows = torch.tensor([index[f] for f in flavours], device=text_features.device)
            out[i] = (flavours, (text_features[rows] @ features[i]).cpu().tolist())
        return out

    def best(self, features, captions: list[str], max_flavors: int) -> tuple[list[str], list[str]]:
        """The best of caption, classic, fast and a flavour chain started from the caption;
        returns the prompts and which kind won."""
        s = self.settings
        flaves = self._rank(features, "merged", s.flavor_intermediate_count)
        chained = self.chain(features, flaves, best_prompts=captions, min_count=s.min_flavors, max_count=max_flavors)
        fast = self.fast(features, captions, max_flavors)
        classic = self.classic(features, captions, max_flavors)
        kinds = ["caption", "classic", "fast", "chain"]
        picks, won = [], []
        for i, options in enumerate(zip(captions, classic, fast, chained)):
            sims = (self.text_features(list(options)) @ features[i]).cpu().tolist()
            choice = max(range(4), key=lambda j: sims[j])
            picks.append(options[choice])
            won.append(kinds[choice])
        return picks, won

    def negative(self, features, max_flavors: int) -> list[str]:
        """A negative prompt: the chain of the terms least like the image."""
        s = self.settings
        table = "flavors" if "flavors" in self.tables else "merged"
        least = self._rank(features, table, s.flavor_intermediate_count, reverse=True)
        if self.fashion is not None and table == "flavors":
            extra = self._rank(features, "merged", s.flavor_intermediate_count, reverse=True)
            least = [list(dict.fromkeys(a + b)) for a, b in zip(least, extra)]
        pools = [row + self.negative_labels for row in least]
        return self.chain(features, pools, max_count=max_flavors, reverse=True)

    # -- the interface ----------------------------------------------------------------------------------
    def caption_batch(self, images: list[PILImage.Image]) -> dict[str, list[CaptionResult]]:
        """Every requested mode for the batch, from one pass of image features and captions."""
        self.load()
        features = self.image_features(images)
        needs_caption = any(mode != "negative" for mode in self.settings.modes)
        captions = self.captions(images) if needs_caption else [""] * len(images)
        out: dict[str, list[CaptionResult]] = {}
        for mode in self.settings.modes:
            k = self.max_flavors(mode)
            if mode == "fast":
                texts, extras = self.fast(features, captions, k), [{}] * len(images)
            elif mode == "classic":
                texts, extras = self.classic(features, captions, k), [{}] * len(images)
            elif mode == "best":
                texts, won = self.best(features, captions, k)
                extras = [{"picked": w} for w in won]
            else:
                texts, extras = self.negative(features, k), [{}] * len(images)
            out[f"clip-{mode}"] = [
                CaptionResult(text, extra={**extra, **({"caption": c} if mode != "negative" else {})})
                for text, c, extra in zip(texts, captions, extras)]
        return out
