"""The captioners through their real loading code, on tiny random models saved as folders:
the batched CLIP Interrogator gives exactly what the package's per-image loop gives in every
mode, BLIP batches, Kosmos-2 grounded output is parsed and checked against garment masks."""

from __future__ import annotations

import pytest
import torch

from tiny_captioners import TinyModels, random_images, shared_tiny_models
from workbench.captions.base import CaptionerError, Phrase, settings_key
from workbench.captions.blip import BlipCaptioner, BlipSettings
from workbench.captions.dataset_prompts import Garment
from workbench.captions.interrogator import (ClipInterrogatorCaptioner, InterrogatorSettings, encode_text_trimmed,
                                             load_clip)
from workbench.captions.kosmos2 import Kosmos2Captioner, Kosmos2Settings, check_phrases, named_garment, parse_grounded
from workbench.captions.vocabulary import FashionVocabulary


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyModels:
    return shared_tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def interrogator(tiny, tmp_path_factory) -> ClipInterrogatorCaptioner:
    settings = InterrogatorSettings(clip_model=str(tiny.clip), caption_model=str(tiny.blip), data_path=str(tiny.labels),
                                    modes=["fast", "classic", "best", "negative"], max_flavors=4, min_flavors=2,
                                    flavor_intermediate_count=24, caption_max_length=8)
    captioner = ClipInterrogatorCaptioner(settings, cache_dir=tmp_path_factory.mktemp("ci-cache"))
    captioner.load()
    return captioner


def test_every_mode_matches_the_packages_own_per_image_results(interrogator) -> None:
    images = random_images(2, seed=1)
    out = interrogator.caption_batch(images)
    assert set(out) == {"clip-fast", "clip-classic", "clip-best", "clip-negative"}
    ci = interrogator.ci
    for i, image in enumerate(images):
        caption = out["clip-fast"][i].extra["caption"]
        assert caption == interrogator.captions([image])[0]
        assert out["clip-fast"][i].text == ci.interrogate_fast(image, max_flavors=4, caption=caption)
        assert out["clip-classic"][i].text == ci.interrogate_classic(image, max_flavors=4, caption=caption)
        assert out["clip-best"][i].text == ci.interrogate(image, min_flavors=2, max_flavors=4, caption=caption)
        assert out["clip-negative"][i].text == ci.interrogate_negative(image, max_flavors=4)
    assert out["clip-best"][0].extra["picked"] in {"caption", "classic", "fast", "chain"}


def test_label_embeddings_are_cached_under_the_cache_folder(interrogator) -> None:
    cached = sorted(p.name for p in interrogator.cache_dir.glob("*.safetensors"))
    assert any(name.endswith("_flavors.safetensors") for name in cached), cached


def test_trimmed_text_encoding_equals_the_full_one(interrogator) -> None:
    clip = interrogator.clip
    tokens = clip.tokenize(["a red dress", "a woman in a long blue coat, street style photo"])
    full = clip.model.encode_text(tokens)
    trimmed = encode_text_trimmed(clip.model, tokens, int((tokens != 0).sum(-1).max()))
    assert torch.allclose(full, trimmed, atol=1e-5)


def test_composed_chain_tokens_equal_the_tokenizer(interrogator) -> None:
    phrases = ["soft light", "bad grain", "a-line"]
    composed = interrogator._composer.candidates("a woman in a dress", phrases)
    assert torch.equal(composed, interrogator.clip.tokenize([f"a woman in a dress, {p}" for p in phrases]))
    assert interrogator._composer.candidates("ends with punctuation.", phrases) is None


def test_fashion_vocabulary_puts_garments_and_attributes_in_the_prompt(tiny, tmp_path) -> None:
    vocab = FashionVocabulary(garments=["dress", "skirt", "top"], attributes=["a-line", "floral", "midi"], extras=["studio photo"])
    settings = InterrogatorSettings(clip_model=str(tiny.clip), caption_model=str(tiny.blip), data_path=str(tiny.labels),
                                    modes=["classic", "fast"], vocabulary="fashion", max_flavors=2, caption_max_length=6)
    captioner = ClipInterrogatorCaptioner(settings, cache_dir=tmp_path, fashion=vocab)
    out = captioner.caption_batch(random_images(2, seed=3))
    for result in out["clip-classic"]:
        parts = result.text.removeprefix(result.extra["caption"]).strip(", ").split(", ")
        assert parts[0] in vocab.garments and set(parts[1:3]) <= set(vocab.attributes) and parts[3] == "studio photo"
    labels = set(vocab.all_labels)
    assert all(set(r.text.removeprefix(r.extra["caption"]).strip(", ").split(", ")) <= labels for r in out["clip-fast"])
    assert captioner.settings_for("clip-fast")["fashion_vocabulary"]


def test_low_vram_switch_uses_the_packages_smaller_defaults() -> None:
    low = InterrogatorSettings(low_vram=True).resolved()
    assert (low.caption_model, low.chunk_size, low.flavor_intermediate_count) == ("blip-base", 1024, 1024)
    normal = InterrogatorSettings().resolved()
    assert (normal.caption_model, normal.chunk_size, normal.flavor_intermediate_count) == ("blip-large", 2048, 2048)


def test_settings_key_separates_settings() -> None:
    fast = ClipInterrogatorCaptioner(InterrogatorSettings(modes=["fast"]))
    other = ClipInterrogatorCaptioner(InterrogatorSettings(modes=["fast"], max_flavors=4))
    assert settings_key(fast.model, fast.settings_for("clip-fast")) != settings_key(other.model, other.settings_for("clip-fast"))


def test_a_missing_model_is_named_with_the_fix(tmp_path) -> None:
    with pytest.raises(CaptionerError, match="open_clip_config.json"):
        load_clip(str(tmp_path))
    with pytest.raises(CaptionerError, match="unknown CLIP model"):
        load_clip("No-Such-Arch/none")


def test_blip_batches_equal_single_images_and_keep_the_prefix(tiny) -> None:
    images = random_images(3, seed=2)
    captioner = BlipCaptioner(BlipSettings(model=str(tiny.blip), max_new_tokens=6))
    batched = captioner.caption(images)
    assert batched == [captioner.caption([image])[0] for image in images]
    assert all(text.strip() for text in batched)
    prefixed = BlipCaptioner(BlipSettings(model=str(tiny.blip), max_new_tokens=6, prefix="a photo of")).caption(images)
    assert all(text.startswith("a photo of") for text in prefixed)


GROUNDED = ("<image>. the, to and of</image><grounding> An image of<phrase> a red dress</phrase><object>"
            "<patch_index_0044><patch_index_0863></object> worn by<phrase> a woman</phrase><object>"
            "<patch_index_0005><patch_index_1007></object> next to<phrase> two bags</phrase><object>"
            "<patch_index_0000><patch_index_0033></object>.")


def test_grounded_output_is_parsed_into_caption_and_pixel_boxes() -> None:
    caption, phrases = parse_grounded(GROUNDED, width=640, height=320)
    assert caption == "An image of a red dress worn by a woman next to two bags."
    assert [p.text for p in phrases] == ["a red dress", "a woman", "two bags"]
    dress = phrases[0]
    assert caption[dress.start:dress.end] == "a red dress"
    # Patch 44 is row 1, column 12 and patch 863 row 26, column 31 of the 32x32 grid; Kosmos-2
    # boxes run between the centres of those cells.
    assert dress.box == pytest.approx((12.5 / 32 * 640, 1.5 / 32 * 320, 31.5 / 32 * 640, 26.5 / 32 * 320))


def test_garment_phrases_are_checked_against_the_masks() -> None:
    garments = [Garment("dress", [], 900, "dress", "wholebody", box=(240, 10, 400, 260)),
                Garment("bag", [], 50, "bag, wallet", "others", box=(0, 0, 30, 30))]
    phrases = [Phrase("a red dress", 0, 11, (240, 10, 640, 270)), Phrase("a woman", 12, 19, (0, 0, 10, 10)),
               Phrase("two bags", 20, 28, (300, 200, 400, 300)), Phrase("a hat", 29, 34, (0, 0, 5, 5))]
    checks = check_phrases(phrases, garments, ["dress", "bag, wallet", "hat"], min_overlap=0.3)
    assert [(c.garment, c.agrees) for c in checks] == [("dress", True), (None, None), ("bag, wallet", False), ("hat", False)]
    assert "IoU" in checks[2].note and "no 'hat' mask" in checks[3].note
    assert named_garment("a pair of shoes", {"shoe": "shoe"}) == "shoe"
    assert named_garment("a shoebox", {"shoe": "shoe"}) is None


def test_kosmos2_captions_a_batch_through_its_processor(tiny) -> None:
    captioner = Kosmos2Captioner(Kosmos2Settings(model=str(tiny.kosmos2), max_new_tokens=6))
    images = random_images(2, seed=4)
    results = captioner.caption_batch(images)["kosmos2"]
    assert len(results) == 2
    for result in results:
        assert "</image>" not in result.text and "<phrase>" not in result.text
        assert all(0 <= p.box[0] <= p.box[2] <= images[0].width for p in result.phrases)
