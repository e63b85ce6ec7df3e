"""train/add_control.py: the initial ControlNet copied from a Stable Diffusion UNet."""

from __future__ import annotations

import pytest
import torch

from train.add_control import AddControlError, create_controlnet, main

pytestmark = pytest.mark.usefixtures("single_thread")


def test_controlnet_copies_the_unet_encoder_and_starts_silent(tiny_sd, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    out = create_controlnet(str(tiny_sd), tmp_path / "cn")
    controlnet = ControlNetModel.from_pretrained(out)
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    assert controlnet.config.conditioning_channels == 3
    for name, value in unet.down_blocks.state_dict().items():
        assert torch.equal(controlnet.down_blocks.state_dict()[name], value)
    # zero convolutions: at step 0 the ControlNet adds nothing to the UNet
    assert all(not p.any() for block in controlnet.controlnet_down_blocks for p in block.parameters())
    assert not any(p.any() for p in controlnet.controlnet_mid_block.parameters())


def test_onehot_channels_and_the_command_line(tiny_sd, tmp_path, capsys):
    from diffusers import ControlNetModel

    assert main([str(tiny_sd), str(tmp_path / "cn7"), "--conditioning-channels", "7"]) == 0
    assert "ControlNet saved" in capsys.readouterr().out
    assert ControlNetModel.from_pretrained(tmp_path / "cn7").config.conditioning_channels == 7


def test_unreadable_bases_are_named(tmp_path, capsys):
    with pytest.raises(AddControlError, match=r"Stable Diffusion base .*nothing-here.* is missing.*Fix: the local"):
        create_controlnet(str(tmp_path / "nothing-here"), tmp_path / "out")
    with pytest.raises(AddControlError, match="no such checkpoint file"):
        create_controlnet(str(tmp_path / "model.safetensors"), tmp_path / "out")
    from safetensors.torch import save_file

    save_file({"not_a_unet": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    assert main([str(tmp_path / "other.safetensors"), str(tmp_path / "out")]) == 2
    assert "cannot read it as a Stable Diffusion checkpoint" in capsys.readouterr().err
