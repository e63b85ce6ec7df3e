"""Trainer options on a tiny Stable Diffusion: gradient checkpointing, SDPA, a trained UNet decoder, bf16."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import train.controlnet as trainer
from train.config import load_config
from train.controlnet import DECODER_PREFIXES, train

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(tiny_sd: Path, export: Path, out: Path, **overrides):
    values = dict(pretrained_model_name_or_path=str(tiny_sd), train_data_dir=str(export), output_dir=str(out),
                  resolution=64, train_batch_size=2, max_train_steps=2, checkpointing_steps=2, validation_steps=2,
                  num_validation_images=0, validation_loss_samples=2, logging_steps=2, learning_rate=1e-4,
                  report_to="none")
    values.update(overrides)
    return load_config(None, values)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _state(folder: Path) -> dict[str, torch.Tensor]:
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(folder).state_dict()


@pytest.fixture
def built(monkeypatch) -> list:
    """The ControlNet+UNet module of each run (the trainer builds it; this records it)."""
    models = []

    class Recorded(trainer.ControlledUNet):
        def __init__(self, controlnet, unet):
            super().__init__(controlnet, unet)
            self.unet_output_dtypes = []
            unet.register_forward_hook(lambda _m, _args, out: self.unet_output_dtypes.append(out[0].dtype))
            models.append(self)

    monkeypatch.setattr(trainer, "ControlledUNet", Recorded)
    return models


@pytest.fixture
def checkpointed(monkeypatch) -> list:
    """Every module whose forward ran under torch.utils.checkpoint (diffusers calls it per block)."""
    import torch.utils.checkpoint

    modules = []
    original = torch.utils.checkpoint.checkpoint

    def spy(function, *args, **kwargs):
        modules.append(getattr(function, "__self__", None))
        return original(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", spy)
    return modules


def test_gradient_checkpointing_recomputes_blocks_without_changing_the_math(
        tiny_sd, tiny_export, tmp_path, built, checkpointed):
    plain = tmp_path / "plain"
    train(_config(tiny_sd, tiny_export, plain))
    assert checkpointed == []  # off by default
    saving = tmp_path / "checkpointing"
    result = train(_config(tiny_sd, tiny_export, saving, gradient_checkpointing=True))

    assert result.global_step == 2
    model = built[-1]
    assert model.controlnet.is_gradient_checkpointing and model.unet.is_gradient_checkpointing
    assert not built[0].controlnet.is_gradient_checkpointing
    # enabled is not enough: the blocks of both networks really ran under checkpoint while training
    ran = {id(m) for m in checkpointed}
    assert ran & {id(m) for m in model.controlnet.modules()}
    assert ran & {id(m) for m in model.unet.modules()}

    losses, reference = [m["loss"] for m in _metrics(saving)], [m["loss"] for m in _metrics(plain)]
    assert all(np.isfinite(losses))
    assert losses[0] == pytest.approx(reference[0], rel=1e-6)  # same seed, same forward
    assert losses[1] == pytest.approx(reference[1], rel=1e-5)  # step 2 follows step 1's gradients
    for name, value in _state(plain).items():  # the same update of every ControlNet weight
        torch.testing.assert_close(_state(saving)[name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_classic_attention_instead_of_sdpa_gives_the_same_losses(tiny_sd, tiny_export, tmp_path, built):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    train(_config(tiny_sd, tiny_export, tmp_path / "sdpa"))
    train(_config(tiny_sd, tiny_export, tmp_path / "classic", enable_sdpa=False))
    sdpa, classic = built
    for model, kind in ((sdpa, AttnProcessor2_0), (classic, AttnProcessor)):
        for net in (model.controlnet, model.unet):
            processors = net.attn_processors.values()
            assert processors and all(type(p) is kind for p in processors)
    a, b = _metrics(tmp_path / "sdpa"), _metrics(tmp_path / "classic")
    assert [m["loss"] for m in b] == pytest.approx([m["loss"] for m in a], rel=1e-4)


def test_channels_last_is_the_cpu_default_and_gives_the_same_losses(tiny_sd, tiny_export, tmp_path, built):
    train(_config(tiny_sd, tiny_export, tmp_path / "default"))
    train(_config(tiny_sd, tiny_export, tmp_path / "contiguous", channels_last=False))
    default, contiguous = built

    def conv_weights(model):
        return [m.weight for net in (model.controlnet, model.unet) for m in net.modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]

    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(default))
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(contiguous))
    a, b = _metrics(tmp_path / "default"), _metrics(tmp_path / "contiguous")
    assert [m["loss"] for m in a] == pytest.approx([m["loss"] for m in b], rel=1e-4)
    # measured slower on an H200: off on CUDA unless asked for
    assert not trainer.uses_channels_last(_config(tiny_sd, tiny_export, tmp_path), torch.device("cuda"))


def _unet_state(folder: Path, subfolder: str | None = None) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(folder, subfolder=subfolder).state_dict()


def test_sd_unlocked_trains_and_saves_the_unet_decoder_only(tiny_sd, tiny_export, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "unlocked"
    train(_config(tiny_sd, tiny_export, out, sd_locked=False, checkpointing_steps=1, checkpoints_total_limit=None))
    assert all(np.isfinite(m["loss"]) for m in _metrics(out))
    base, trained = _unet_state(tiny_sd, "unet"), _unet_state(out / "unet")  # a complete UNet, loadable alone
    assert trained.keys() == base.keys()
    decoder = [k for k in base if k.startswith(DECODER_PREFIXES)]
    encoder = [k for k in base if not k.startswith(DECODER_PREFIXES)]
    assert any(k.startswith("up_blocks.") for k in decoder) and any(k.startswith("conv_out.") for k in decoder)
    assert any(k.startswith("down_blocks.") for k in encoder) and any(k.startswith("mid_block.") for k in encoder)
    changed = [k for k in decoder if not torch.equal(trained[k], base[k])]
    assert changed == decoder  # every decoder weight was trained
    assert [k for k in encoder if not torch.equal(trained[k], base[k])] == []  # the encoder stayed frozen

    # each checkpoint holds exactly the decoder, and the last one equals the final UNet's
    last = load_file(str(out / "checkpoint-2" / "unet_decoder.safetensors"))
    assert sorted(last) == sorted(decoder)
    assert all(torch.equal(last[k], trained[k]) for k in decoder)
    first = load_file(str(out / "checkpoint-1" / "unet_decoder.safetensors"))
    assert not all(torch.equal(first[k], last[k]) for k in decoder)


def test_resume_restores_the_trained_unet_decoder(tiny_sd, tiny_export, tmp_path):
    common = dict(sd_locked=False, checkpointing_steps=1, checkpoints_total_limit=None, validation_steps=100)
    whole = tmp_path / "whole"
    train(_config(tiny_sd, tiny_export, whole, **common))
    cut = tmp_path / "cut"
    train(_config(tiny_sd, tiny_export, cut, max_train_steps=1, **common))
    shutil.rmtree(cut / "unet")  # only the checkpoint may carry the decoder into the resumed run
    train(_config(tiny_sd, tiny_export, cut, resume_from_checkpoint="latest", **common))
    assert [m["loss"] for m in _metrics(cut)] == pytest.approx([m["loss"] for m in _metrics(whole)], rel=1e-5)
    resumed, reference = _unet_state(cut / "unet"), _unet_state(whole / "unet")
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-7, msg=name)


def _bf16_refused() -> str | None:
    from accelerate.utils import is_bf16_available

    return None if is_bf16_available() else "accelerate.utils.is_bf16_available() is False on this CPU"


def test_bf16_mixed_precision_on_the_cpu(tiny_sd, tiny_export, tmp_path, built):
    if reason := _bf16_refused():
        pytest.skip(f"{reason}: accelerate refuses mixed_precision='bf16' here")
    out = tmp_path / "bf16"
    # a run with another precision before it: each run sets its own (accelerate's state is per process)
    train(_config(tiny_sd, tiny_export, tmp_path / "fp32", max_train_steps=1))
    steps = []
    train(_config(tiny_sd, tiny_export, out, mixed_precision="bf16", num_validation_images=1,
                  validation_inference_steps=2), progress=lambda done, total: steps.append(done))
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == [1, 2] and steps == [1, 2]
    assert all(np.isfinite(m["loss"]) for m in metrics) and np.isfinite(metrics[-1]["val_loss"])
    assert (out / "validation" / "step-0000002.png").is_file()
    fp32_run, model = built
    assert set(fp32_run.unet_output_dtypes) == {torch.float32}
    assert set(model.unet_output_dtypes) == {torch.bfloat16}  # the forward really ran under bf16 autocast
    # frozen weights in bf16; the trained ControlNet keeps fp32 weights, and is saved in fp32
    assert model.unet.dtype == torch.bfloat16
    assert {p.dtype for p in model.controlnet.parameters()} == {torch.float32}
    trained = _state(out)
    assert {v.dtype for v in trained.values()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in trained.values())


def test_bf16_with_a_trained_decoder_saves_the_frozen_encoder_unrounded(tiny_sd, tiny_export, tmp_path):
    if reason := _bf16_refused():
        pytest.skip(f"{reason}: accelerate refuses mixed_precision='bf16' here")
    out = tmp_path / "bf16-unlocked"
    train(_config(tiny_sd, tiny_export, out, mixed_precision="bf16", sd_locked=False))
    base, trained = _unet_state(tiny_sd, "unet"), _unet_state(out / "unet")
    encoder = [k for k in base if not k.startswith(DECODER_PREFIXES)]
    # training held the frozen encoder in bf16; the saved UNet must still carry the base's fp32 weights
    assert [k for k in encoder if not torch.equal(trained[k], base[k])] == []
    decoder = [k for k in base if k.startswith(DECODER_PREFIXES)]
    assert all(not torch.equal(trained[k], base[k]) for k in decoder)
    assert {v.dtype for v in trained.values()} == {torch.float32}
